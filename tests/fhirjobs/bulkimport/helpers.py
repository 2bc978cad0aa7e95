"""Helpers of the bulkimport tests (builders, clients); the fixtures are in conftest.py."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

from batch.testing import InProcessBus
from tests.fhirstore.helpers import FhirClient


def parameters(*urls: str, **storage: str) -> dict:
    """An `$import` Parameters body for these input URLs (type from the file name)."""
    body = [{"name": "inputFormat", "valueCode": "application/fhir+ndjson"}]
    if storage:
        body.append(
            {
                "name": "storageDetail",
                "part": [{"name": name, "valueString": value} for name, value in {"type": "https", **storage}.items()],
            }
        )
    for url in urls:
        body.append(
            {
                "name": "input",
                "part": [
                    {"name": "type", "valueCode": url.rsplit("/", 1)[-1].split(".")[0]},
                    {"name": "url", "valueUri": url},
                ],
            }
        )
    return {"resourceType": "Parameters", "parameter": body}


@dataclass
class Importer:
    """An `$import` client over the Django test client, with the job run in-process by `bus`."""

    fhir: FhirClient
    bus: InProcessBus

    def kick_off(self, *urls: str, prefer: str = "respond-async", **storage: str):
        return self.fhir.post("/fhir/$import", parameters(*urls, **storage), HTTP_PREFER=prefer)

    def run(self, *urls: str, **storage: str) -> dict:
        """Kick off, run the job to its end, and return the final OperationOutcome."""
        response = self.kick_off(*urls, **storage)
        assert response.status_code == 202, response.content
        return self.finish(response["Content-Location"])

    def finish(self, status_url: str) -> dict:
        self.bus.drain()
        response = self.fhir.get(status_url)
        assert response.status_code == 200, response.content
        return response.json()


def file_urls(directory: Path) -> list[str]:
    return [path.as_uri() for path in sorted(directory.iterdir()) if path.name.endswith((".ndjson", ".ndjson.gz"))]


def write_ndjson(path: Path, *lines) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def diagnostics(outcome: dict) -> list[str]:
    return [issue["diagnostics"] for issue in outcome["issue"]]


class SeenRequest(NamedTuple):
    port: int  # which of the servers
    path: str
    authorization: str | None
    cookie: str | None


class HttpSources:
    """Two local HTTP servers standing in for import sources (a provider and, say, its storage).

    Every server answers `routes` {path with query: (status, headers, body)} (404 otherwise), each path its
    `failures` count of 503s first, and records every request it gets in `requests`."""

    def __init__(self, count: int = 2, ports: list[int] | None = None):
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.failures: dict[str, int] = {}
        self.requests: list[SeenRequest] = []
        self._servers = [ThreadingHTTPServer(("127.0.0.1", port), _SourceHandler) for port in ports or [0] * count]
        for server in self._servers:
            server.sources = self
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.bases = [f"http://127.0.0.1:{server.server_address[1]}" for server in self._servers]
        self.base = self.bases[0]

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


class _SourceHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        sources: HttpSources = self.server.sources
        sources.requests.append(
            SeenRequest(
                self.server.server_address[1], self.path, self.headers.get("Authorization"), self.headers.get("Cookie")
            )
        )
        if sources.failures.get(self.path):
            sources.failures[self.path] -= 1
            self.send_response(503)
            self.end_headers()
            return
        status, headers, body = sources.routes.get(self.path, (404, {}, b""))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass
