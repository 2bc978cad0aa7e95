"""Helpers of the bulkexport tests (builders, clients); the fixtures are in conftest.py."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from django.core.files.storage import storages

from batch.testing import InProcessBus
from fhirjobs.bulkexport.models import ExportFile
from tests.fhirstore.helpers import FhirClient


@dataclass
class Exporter:
    """A Bulk Data client over the Django test client, with the job run in-process by `bus`."""

    fhir: FhirClient
    bus: InProcessBus

    def kick_off(self, path: str, prefer: str = "respond-async"):
        return self.fhir.get(path, HTTP_PREFER=prefer)

    def kick_off_post(self, path: str, parameters: list[dict], prefer: str = "respond-async"):
        return self.fhir.post(path, {"resourceType": "Parameters", "parameter": parameters}, HTTP_PREFER=prefer)

    def export(self, path: str, prefer: str = "respond-async") -> dict:
        """Kick off, run the job to its end, and return the manifest."""
        response = self.kick_off(path, prefer)
        assert response.status_code == 202, response.content
        return self.finish(response["Content-Location"])

    def finish(self, status_url: str) -> dict:
        self.bus.drain()
        response = self.fhir.get(status_url)
        assert response.status_code == 200, response.content
        return response.json()

    def download(self, manifest: dict) -> dict[str, list[dict]]:
        """Every output file's resources, by type."""
        downloaded: dict[str, list[dict]] = {}
        for output in manifest["output"]:
            response = self.fhir.get(output["url"])
            assert response.status_code == 200, response.content
            assert response["Content-Type"] == "application/fhir+ndjson"
            lines = b"".join(response.streaming_content).decode().splitlines()
            assert len(lines) == output["count"]
            downloaded.setdefault(output["type"], []).extend(json.loads(line) for line in lines)
        return downloaded

    def ids(self, manifest: dict) -> dict[str, list[str]]:
        return {
            resource_type: sorted(resource["id"] for resource in resources)
            for resource_type, resources in self.download(manifest).items()
        }


def exported_ids(report: dict) -> Counter:
    """(type, id) of every line of the export's files, each file checked against its manifest count."""
    listed: Counter = Counter()
    for output in report["output"]:
        path = ExportFile.objects.get(id=output["url"].rsplit("/", 1)[1]).path
        with storages["bulkexport"].open(path) as file:
            lines = file.read().decode().splitlines()
        assert len(lines) == output["count"]
        listed.update((output["type"], json.loads(line)["id"]) for line in lines)
    return listed


def observation(logical_id: str, subject: str, category: str = "laboratory", **extra) -> dict:
    return {
        "resourceType": "Observation",
        "id": logical_id,
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{subject}"},
        **extra,
    }
