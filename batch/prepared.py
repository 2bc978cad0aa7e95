"""The hot path's SQL helpers: statements prepared on the server, and commits that do not wait for the disk."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from django.db import connection

# The worker's hot statements (claim, emitted chunks, completion) commit without waiting for the WAL
# flush to disk: on a shared disk that wait is most of a chunk's cost. A PostgreSQL crash (not a worker
# crash) can then lose the last fraction of a second of them, always as a suffix, which looks exactly
# like a worker that died at that point: those chunks are claimed and run again, as after any crash.
RELAXED_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true))"


def execute_prepared(sql: str, params: Mapping[str, Any]) -> tuple | None:
    """Run a hot statement as a server-side prepared statement and return its first row.

    Django binds parameters on the client, so PostgreSQL parses and plans every statement anew; for the
    claim and the completion, which run once per chunk, planning costs more than running them.
    """
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()
