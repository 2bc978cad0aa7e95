"""Helpers of the terminology tests: a slice of the real ICD-10-CM 2026 tabular XML, upload bodies, answers."""

from __future__ import annotations

import base64
from pathlib import Path

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
# Chapters 1, 4 and 19 of the 2026 file, cut down to B10 (a one-category section), E11 (whole), S06.2 (the
# 7th characters S06's note limits), S72.00-S72.01 (a sevenChrDef two levels up) and T07 (padding with X).
SLICE = Path(__file__).parent / "icd10cm-tabular-slice.xml"


def upload_body(
    content: bytes, *, version: str | None = None, make_current: bool | None = None, system: str = ICD10CM
) -> dict:
    parameters = [
        {"name": "system", "valueUri": system},
        {"name": "file", "valueAttachment": {"title": "tabular.xml", "data": base64.b64encode(content).decode()}},
    ]
    if version is not None:
        parameters.append({"name": "version", "valueString": version})
    if make_current is not None:
        parameters.append({"name": "makeCurrent", "valueBoolean": make_current})
    return {"resourceType": "Parameters", "parameter": parameters}


def parameters_of(response) -> dict:
    assert response.status_code == 200, response.content[:2000]
    return {p["name"]: p for p in response.json()["parameter"]}


def load_slice(version: str = "2026", *, current: bool = True, content: bytes | None = None) -> int:
    """The slice written straight through the store's functions (what the upload's steps call); its id."""
    import io

    from fhirstore.terminology import storage
    from fhirstore.terminology.icd10cm import read_concepts

    loaded = storage.new_version(ICD10CM, version)
    records = list(read_concepts(io.BytesIO(content or SLICE.read_bytes())))
    storage.write_concepts(loaded.id, records)
    storage.build_closure(loaded.id, [record.code for record in records])
    if current:
        storage.make_current(loaded.id, concepts=len(records))
    return loaded.id
