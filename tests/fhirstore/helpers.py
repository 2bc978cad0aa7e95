"""Helpers for the FHIR store tests: a FHIR JSON client, sample resources, OperationOutcome and reference checks."""

import json
from datetime import datetime
from pathlib import Path

from django.db import transaction
from django.test import Client

from fhirstore.authority import SERVER
from fhirstore.models import Resource
from fhirstore.references import reference_elements
from fhirstore.search_params import parse_relative_reference
from fhirstore.storage import Write, delete_resource, save_resources

FIXTURES = Path(__file__).parent / "fixtures"
SYNTHEA_NDJSON = FIXTURES / "synthea-3-patients"
SYNTHEA_BUNDLES = FIXTURES / "synthea-bundles"
FHIR_JSON = "application/fhir+json"


class FhirClient:
    """A Django test client speaking FHIR JSON, with an API token unless told otherwise."""

    def __init__(self, authorization: str | None = None, **defaults):
        headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
        self.client = Client(**headers, **defaults)

    def get(self, path: str, **headers):
        return self.client.get(path, HTTP_ACCEPT=FHIR_JSON, **headers)

    def post(self, path: str, document, **headers):
        return self.client.post(path, _body(document), content_type=FHIR_JSON, **headers)

    def put(self, path: str, document, **headers):
        return self.client.put(path, _body(document), content_type=FHIR_JSON, **headers)

    def delete(self, path: str, **headers):
        return self.client.delete(path, **headers)


def _body(document) -> str | bytes:
    return document if isinstance(document, (str, bytes)) else json.dumps(document)


def store(*resources: dict, at: datetime | None = None) -> None:
    """Write resources (with their ids) as one batch, as the store's write path does, optionally as of `at`
    (their meta.lastUpdated)."""
    with transaction.atomic():
        save_resources([Write(resource) for resource in resources], now=at, authority=SERVER)


def delete(resource_type: str, logical_id: str) -> None:
    with transaction.atomic():
        delete_resource(resource_type, logical_id, authority=SERVER)


def patient(family: str = "Chalmers", given: str = "Peter", birth_date: str = "1974-12-25", **extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}], "birthDate": birth_date, **extra}


def assert_outcome(response, status: int, text: str = "") -> dict:
    """The response has this status and an OperationOutcome body mentioning `text`."""
    assert response.status_code == status, response.content[:2000]
    assert response["Content-Type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    diagnostics = " ".join(issue.get("diagnostics", "") for issue in body["issue"])
    assert text in diagnostics, diagnostics
    return body


def assert_every_reference_resolves() -> None:
    for body in Resource.objects.filter(deleted=False).values_list("body", flat=True).iterator():
        for element in reference_elements(body):
            if element["reference"].startswith("#"):
                continue
            target = parse_relative_reference(element["reference"])
            assert target is not None, element["reference"]
            assert Resource.objects.filter(resource_type=target[0], logical_id=target[1]).exists(), target
