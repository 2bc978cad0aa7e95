"""Helpers of the reindex tests (builders, clients); the fixtures are in conftest.py, `patient` in
`tests.fhirjobs.helpers`."""

from __future__ import annotations

from fhirstore.models import Resource
from fhirstore.storage import INDEX_TABLES
from tests.fhirjobs.helpers import BIRTH_SEX


def search_parameter(
    code: str = "birthsex", expression: str | None = None, base=("Patient",), kind: str = "token", **extra
) -> dict:
    return {
        "resourceType": "SearchParameter",
        "url": f"http://example.org/SearchParameter/{code}",
        "name": code,
        "status": "active",
        "description": code,
        "code": code,
        "base": list(base),
        "type": kind,
        "expression": expression or f"Patient.extension.where(url='{BIRTH_SEX}').value",
        **extra,
    }


def index_snapshot(**filters) -> dict[str, set[tuple]]:
    """Every index row (of the resources matching `filters`), by table, keyed by logical id instead of pk."""
    logical = dict(Resource.objects.values_list("id", "logical_id"))
    snapshot = {}
    for model in INDEX_TABLES:
        columns = [f.column for f in model._meta.local_fields if f.column and f.column != "resource_id"]
        rows = model.objects.filter(**filters).values_list("resource_id", *columns)
        snapshot[model.__name__] = {(logical[row[0]], *row[1:]) for row in rows}
    return snapshot
