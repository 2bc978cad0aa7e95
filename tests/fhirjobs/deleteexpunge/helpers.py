"""Helpers of the delete-expunge tests: the deleter's scopes, resources, and every table's rows of some resources."""

from __future__ import annotations

from fhirstore.models import Resource, ResourceVersion
from fhirstore.storage import INDEX_TABLES

DELETER_SCOPES = ["fhir:read", "fhir:write", "admin:delete"]


def observation(logical_id: str, subject: str | None = None, code: str = "8867-4") -> dict:
    return {
        "resourceType": "Observation",
        "id": logical_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        **({"subject": {"reference": subject}} if subject else {}),
    }


def delete_expunge_parameters(resource_type: str, *, cascade: bool = False) -> dict:
    """A DELETE_EXPUNGE job's parameters over every resource of the type, as its steps read them."""
    return {"urls": [f"{resource_type}?"], "cascade": cascade, "cascade_max_rounds": 10}


def rows_of(resource_type: str, logical_ids=None) -> dict[str, int]:
    """How many rows every table holds of these resources (of every resource of the type when None)."""
    resources = Resource.objects.filter(resource_type=resource_type)
    if logical_ids is not None:
        resources = resources.filter(logical_id__in=list(logical_ids))
    return rows_of_keys(list(resources.values_list("id", flat=True)))


def keys_of(resource_type: str) -> list[int]:
    """The row keys (pk) of every resource of the type, in key order: after a deletion, `rows_of_keys` of these
    finds what was left behind, index rows included (their tables have no foreign key to stop an orphan)."""
    return list(Resource.objects.filter(resource_type=resource_type).order_by("id").values_list("id", flat=True))


def rows_of_keys(pks: list[int]) -> dict[str, int]:
    """How many rows every table holds of the resources with these row keys, whether those still exist or not."""
    counts = {
        "resource": Resource.objects.filter(id__in=pks).count(),
        "version": ResourceVersion.objects.filter(resource_id__in=pks).count(),
    }
    counts.update({model.__name__: model.objects.filter(resource_id__in=pks).count() for model in INDEX_TABLES})
    return counts


def no_rows() -> dict[str, int]:
    return {"resource": 0, "version": 0, **{model.__name__: 0 for model in INDEX_TABLES}}
