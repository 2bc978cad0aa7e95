"""Helpers of the delete-expunge tests: resources, and every table's rows of some resources."""
from __future__ import annotations

from fhirstore.models import Resource, ResourceVersion
from fhirstore.storage import INDEX_TABLES


def observation(logical_id: str, subject: str | None = None, code: str = "8867-4") -> dict:
    return {"resourceType": "Observation", "id": logical_id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            **({"subject": {"reference": subject}} if subject else {})}


def patient(logical_id: str, active: bool = True) -> dict:
    return {"resourceType": "Patient", "id": logical_id, "active": active, "name": [{"family": logical_id}]}


def rows_of(resource_type: str, logical_ids=None) -> dict[str, int]:
    """How many rows every table holds of these resources (of every resource of the type when None)."""
    resources = Resource.objects.filter(resource_type=resource_type)
    if logical_ids is not None:
        resources = resources.filter(logical_id__in=list(logical_ids))
    pks = list(resources.values_list("id", flat=True))
    counts = {"resource": len(pks), "version": ResourceVersion.objects.filter(resource_id__in=pks).count()}
    counts.update({model.__name__: model.objects.filter(resource_id__in=pks).count() for model in INDEX_TABLES})
    return counts


def no_rows() -> dict[str, int]:
    return {"resource": 0, "version": 0, **{model.__name__: 0 for model in INDEX_TABLES}}
