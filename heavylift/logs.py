"""LOG_FORMAT=json: one JSON object per line for log shippers (Loki, Elasticsearch, CloudWatch), from the web
and worker processes alike.

Fields: `time` (UTC, ISO 8601 to the microsecond), `level`, `logger`, `message`, `process`; `node` on every
line, `job_id`, `chunk_id` and `step` on the lines written while a worker runs a chunk (batch.log_context);
any `extra={...}` a call passed; `exception` with the traceback when there is one. orjson (already a
dependency) writes the line: no logging library of its own for a dozen lines.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson

# What every LogRecord has: anything else on a record was added by a filter or a call's `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        line.update(
            (name, value)
            for name, value in vars(record).items()
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_")
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()
