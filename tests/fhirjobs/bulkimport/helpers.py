"""Helpers of the bulkimport tests (builders, clients); the fixtures are in conftest.py."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from batch.testing import InProcessBus
from tests.fhirstore.helpers import FhirClient


def parameters(*urls: str, **storage: str) -> dict:
    """An `$import` Parameters body for these input URLs (type from the file name)."""
    body = [{"name": "inputFormat", "valueCode": "application/fhir+ndjson"}]
    if storage:
        body.append({"name": "storageDetail", "part": [{"name": name, "valueString": value}
                                                       for name, value in {"type": "https", **storage}.items()]})
    for url in urls:
        body.append({"name": "input", "part": [{"name": "type", "valueCode": url.rsplit("/", 1)[-1].split(".")[0]},
                                               {"name": "url", "valueUri": url}]})
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
