"""An upload of a local code system as HAPI's custom terminology CSV files, run in this process by `bus`."""

from __future__ import annotations

import base64

import pytest

from batch import control
from batch.control import JobStatus
from fhirstore.terminology.models import CodeSystemVersion
from tests.fhirstore.terminology.helpers import parameters_of
from tests.fhirstore.terminology.test_customcsv import CONCEPTS, HIERARCHY, LOCAL, PROPERTIES


@pytest.mark.django_db(transaction=True)
def test_a_local_code_system_uploads_and_answers(uploader, reader, bus):
    def attachment(name: str, text: str) -> dict:
        return {"name": "file", "valueAttachment": {"title": name, "data": base64.b64encode(text.encode()).decode()}}

    response = uploader.post(
        "/fhir/CodeSystem/$upload-external-code-system",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "system", "valueUri": LOCAL},
                attachment("concepts.csv", CONCEPTS),
                attachment("hierarchy.csv", HIERARCHY),
                attachment("properties.csv", PROPERTIES),
            ],
        },
    )
    job_id = parameters_of(response)["jobId"]["valueString"]
    bus.drain()
    assert control.get_job(job_id).status == JobStatus.COMPLETED, control.get_job(job_id).error_message
    assert CodeSystemVersion.objects.get(system=LOCAL).version == "1"
    assert (
        parameters_of(reader.get(f"/fhir/CodeSystem/$subsumes?system={LOCAL}&codeA=PANEL&codeB=HGB"))["outcome"][
            "valueCode"
        ]
        == "subsumes"
    )
    found = reader.get(f"/fhir/CodeSystem/$lookup?system={LOCAL}&code=HGB&property=loinc").json()
    assert {"name": "value", "valueCoding": {"system": "http://loinc.org", "code": "718-7"}} in [
        part for p in found["parameter"] if p["name"] == "property" for part in p["part"]
    ]


@pytest.mark.django_db
def test_files_not_named_as_the_format_wants_are_refused_at_kick_off(uploader):
    response = uploader.post(
        "/fhir/CodeSystem/$upload-external-code-system",
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "system", "valueUri": LOCAL},
                {"name": "file", "valueAttachment": {"title": "codes.txt", "data": base64.b64encode(b"x").decode()}},
            ],
        },
    )
    assert response.status_code == 400
    assert "codes.txt: a custom code system takes concepts.csv" in response.content.decode()
