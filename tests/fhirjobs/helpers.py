"""Resources the FHIR jobs' tests share."""

from __future__ import annotations


def patient(logical_id: str, *identifiers: str, **extra) -> dict:
    """A Patient named after its id (so a test reads which one it is from any output), with `urn:mrn`
    identifiers of these values and any other elements given."""
    mrns = {"identifier": [{"system": "urn:mrn", "value": value} for value in identifiers]} if identifiers else {}
    return {"resourceType": "Patient", "id": logical_id, "name": [{"family": logical_id}], **mrns, **extra}
