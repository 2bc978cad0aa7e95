"""Resources the FHIR jobs' tests share, and the context a step function is called with directly."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

# US Core's birth sex extension: what the reindex tests' custom SearchParameter indexes
BIRTH_SEX = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex"


def patient(logical_id: str, *identifiers: str, birth_sex: str | None = None, **extra) -> dict:
    """A Patient named after its id (so a test reads which one it is from any output), with `urn:mrn`
    identifiers of these values, a US Core birth sex when given, and any other elements given."""
    mrns = {"identifier": [{"system": "urn:mrn", "value": value} for value in identifiers]} if identifiers else {}
    sex = {"extension": [{"url": BIRTH_SEX, "valueCode": birth_sex}]} if birth_sex else {}
    return {"resourceType": "Patient", "id": logical_id, "name": [{"family": logical_id}], **mrns, **sex, **extra}


@dataclass
class ChunkContext:
    """What a step reads of its chunk when a test calls it directly: the chunk's data, the job's parameters,
    and ids that stay the same when it runs again (pass them again for a chunk run again)."""

    data: dict[str, Any]
    parameters: dict[str, Any]
    instance_id: uuid.UUID = field(default_factory=uuid.uuid4)
    chunk_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def check_cancelled(self) -> None:
        pass
