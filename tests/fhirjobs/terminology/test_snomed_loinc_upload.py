"""SNOMED CT and LOINC uploaded from files in their published layouts (generated: tests/fhirstore/…/rf2.py),
run in this process by `bus`."""

from __future__ import annotations

import base64

import pytest

from batch import control
from batch.control import JobStatus
from fhirstore.terminology.models import Closure, CodeSystemVersion
from tests.fhirstore.terminology import rf2
from tests.fhirstore.terminology.helpers import parameters_of

SNOMED, LOINC = "http://snomed.info/sct", "http://loinc.org"


def upload(client, bus, system: str, files: dict[str, str]) -> CodeSystemVersion:
    response = client.post(
        "/fhir/CodeSystem/$upload-external-code-system",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "system", "valueUri": system},
                *(
                    {
                        "name": "file",
                        "valueAttachment": {"title": name, "data": base64.b64encode(text.encode()).decode()},
                    }
                    for name, text in files.items()
                ),
            ],
        },
    )
    job_id = parameters_of(response)["jobId"]["valueString"]
    bus.drain()
    assert control.get_job(job_id).status == JobStatus.COMPLETED, control.get_job(job_id).error_message
    return CodeSystemVersion.objects.get(system=system)


@pytest.mark.django_db(transaction=True)
def test_an_rf2_snapshot_uploads_with_its_release_date_and_answers_through_both_parents(uploader, reader, bus):
    version = upload(uploader, bus, SNOMED, rf2.SNOMED_FILES)
    assert (version.version, version.name, version.status, version.concept_count) == (
        "20250101",
        "SNOMED CT",
        "CURRENT",
        7,
    )
    for ancestor in (rf2.DIABETES, rf2.GLUCOSE, rf2.ROOT):
        assert (
            parameters_of(
                reader.get(f"/fhir/CodeSystem/$subsumes?system={SNOMED}&codeA={ancestor}&codeB={rf2.TYPE_2}")
            )["outcome"]["valueCode"]
            == "subsumes"
        )
    assert Closure.objects.filter(code_system_version=version, descendant=rf2.TYPE_2).count() == 6
    found = parameters_of(reader.get(f"/fhir/CodeSystem/$lookup?system={SNOMED}&code={rf2.TYPE_2}"))
    assert found["display"]["valueString"] == "Type 2 diabetes mellitus"


@pytest.mark.django_db(transaction=True)
def test_a_loinc_release_uploads_with_its_version_and_hierarchy(uploader, reader, bus):
    version = upload(uploader, bus, LOINC, rf2.LOINC_FILES)
    assert (version.version, version.name, version.concept_count) == ("2.80", "LOINC", 7)
    assert (
        parameters_of(reader.get(f"/fhir/CodeSystem/$subsumes?system={LOINC}&codeA=LP7786-9&codeB=718-7"))["outcome"][
            "valueCode"
        ]
        == "subsumes"
    )
    assert (
        parameters_of(reader.get(f"/fhir/CodeSystem/$lookup?system={LOINC}&code=2345-7"))["display"]["valueString"]
        == "Glucose [Mass/volume] in Serum or Plasma"
    )


@pytest.mark.django_db
def test_files_of_another_release_kind_are_refused_at_kick_off(uploader):
    response = uploader.post(
        "/fhir/CodeSystem/$upload-external-code-system",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "system", "valueUri": SNOMED},
                {
                    "name": "file",
                    "valueAttachment": {
                        "title": "sct2_Concept_Full_INT_20250101.txt",
                        "data": base64.b64encode(b"x").decode(),
                    },
                },
            ],
        },
    )
    assert response.status_code == 400
    assert "SNOMED CT takes the RF2 Snapshot files" in response.content.decode()
