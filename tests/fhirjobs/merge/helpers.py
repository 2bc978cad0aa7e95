"""Resources of the merge tests, and the Parameters of a `$merge`."""

from __future__ import annotations

ASYNC = {"HTTP_PREFER": "respond-async"}


def observation(logical_id: str, subject: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": logical_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "performer": [{"reference": subject}],
    }


def encounter(logical_id: str, subject: str) -> dict:
    return {
        "resourceType": "Encounter",
        "id": logical_id,
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": {"reference": subject},
    }


def merge_parameters(source: str | None = "Patient/src", target: str | None = "Patient/tgt", **extra) -> dict:
    values = []
    if source:
        values.append({"name": "source-patient", "valueReference": {"reference": source}})
    if target:
        values.append({"name": "target-patient", "valueReference": {"reference": target}})
    kinds = {
        "preview": "valueBoolean",
        "delete-source": "valueBoolean",
        "batch-size": "valueInteger",
        "result-patient": "resource",
        "source-patient-identifier": "valueIdentifier",
        "target-patient-identifier": "valueIdentifier",
    }
    values += [{"name": name.replace("_", "-"), kinds[name.replace("_", "-")]: value} for name, value in extra.items()]
    return {"resourceType": "Parameters", "parameter": values}


def output(answer: dict, name: str) -> dict:
    return next(parameter["resource"] for parameter in answer["parameter"] if parameter["name"] == name)
