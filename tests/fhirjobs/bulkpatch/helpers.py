"""Resources and patches of the bulk patch tests."""

from __future__ import annotations


def observation(logical_id: str, code: str = "8867-4", status: str = "final", **extra) -> dict:
    return {
        "resourceType": "Observation",
        "id": logical_id,
        "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        **extra,
    }


def replace(path: str, **value) -> dict:
    """A FHIRPath Patch of one replace operation (`value` as its value[x]: valueCode="amended")."""
    [(kind, given)] = value.items()
    return {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": path},
                    {"name": "value", kind: given},
                ],
            }
        ],
    }
