"""HAPI's custom terminology CSV files: the reader, and an upload of a local code system with them."""
from __future__ import annotations

import base64
import io
from contextlib import nullcontext

import pytest

from batch import control
from batch.control import JobStatus
from fhirstore.terminology.customcsv import read_concepts
from fhirstore.terminology.exceptions import InvalidTerminologyFile
from fhirstore.terminology.models import CodeSystemVersion
from tests.fhirstore.terminology.conftest import parameters_of

LOCAL = "http://example.org/CodeSystem/lab"
CONCEPTS = ("\ufeffCODE,DISPLAY\nPANEL,Lab panels\nCBC,Complete blood count\nHGB,Hemoglobin\n"
            "WBC,\"White cells, count\"\n")
HIERARCHY = "PARENT,CHILD\nPANEL,CBC\nCBC,HGB\nCBC,WBC\nPANEL,WBC\n"
PROPERTIES = "CODE,KEY,VALUE,TYPE\nHGB,unit,g/dL,STRING\nHGB,loinc,http://loinc.org|718-7,CODING\nWBC,unit,10*3/uL,\n"


def opener(text: str):
    return lambda: nullcontext(io.BytesIO(text.encode()))


def test_concepts_with_several_parents_and_typed_properties():
    read = {r.code: r for r in read_concepts({"concepts.csv": opener(CONCEPTS), "hierarchy.csv": opener(HIERARCHY),
                                              "properties.csv": opener(PROPERTIES)})}
    assert list(read) == ["PANEL", "CBC", "HGB", "WBC"]
    assert read["WBC"].display == "White cells, count" and sorted(read["WBC"].parents) == ["CBC", "PANEL"]
    assert [(p.name, p.value, p.type, p.system) for p in read["HGB"].properties] == [
        ("unit", "g/dL", "string", ""), ("loinc", "718-7", "Coding", "http://loinc.org")]


@pytest.mark.parametrize("files, message", [
    ({"hierarchy.csv": opener(HIERARCHY)}, "needs a concepts.csv"),
    ({"concepts.csv": opener("CODE,NAME\nA,a\n")}, "no column DISPLAY"),
    ({"concepts.csv": opener("CODE,DISPLAY\nA,a\nA,b\n")}, "'A' appears more than once"),
    ({"concepts.csv": opener("CODE,DISPLAY\nA,a\n"), "hierarchy.csv": opener("PARENT,CHILD\nA,B\n")},
     "does not have: B"),
    ({"concepts.csv": opener("CODE,DISPLAY\nA,a\n"), "properties.csv": opener("CODE,KEY,VALUE,TYPE\nA,k,v,DATE\n")},
     "'DATE' is not STRING or CODING"),
])
def test_bad_files_are_refused_with_the_reason(files, message):
    with pytest.raises(InvalidTerminologyFile, match=message):
        list(read_concepts(files))


@pytest.mark.django_db(transaction=True)
def test_a_local_code_system_uploads_and_answers(uploader, reader, bus):
    def attachment(name: str, text: str) -> dict:
        return {"name": "file", "valueAttachment": {"title": name, "data": base64.b64encode(text.encode()).decode()}}

    response = uploader.post("/fhir/CodeSystem/$upload-external-code-system", {"resourceType": "Parameters",
        "parameter": [{"name": "system", "valueUri": LOCAL}, attachment("concepts.csv", CONCEPTS),
                      attachment("hierarchy.csv", HIERARCHY), attachment("properties.csv", PROPERTIES)]})
    job_id = parameters_of(response)["jobId"]["valueString"]
    bus.drain()
    assert control.get_job(job_id).status == JobStatus.COMPLETED, control.get_job(job_id).error_message
    assert CodeSystemVersion.objects.get(system=LOCAL).version == "1"
    assert parameters_of(reader.get(f"/fhir/CodeSystem/$subsumes?system={LOCAL}&codeA=PANEL&codeB=HGB"))[
        "outcome"]["valueCode"] == "subsumes"
    found = reader.get(f"/fhir/CodeSystem/$lookup?system={LOCAL}&code=HGB&property=loinc").json()
    assert {"name": "value", "valueCoding": {"system": "http://loinc.org", "code": "718-7"}} in [
        part for p in found["parameter"] if p["name"] == "property" for part in p["part"]]


@pytest.mark.django_db
def test_files_not_named_as_the_format_wants_are_refused_at_kick_off(uploader):
    response = uploader.post("/fhir/CodeSystem/$upload-external-code-system", {"resourceType": "Parameters",
        "parameter": [{"name": "system", "valueUri": LOCAL}, {"name": "file", "valueAttachment": {
            "title": "codes.txt", "data": base64.b64encode(b"x").decode()}}]})
    assert response.status_code == 400
    assert "codes.txt: a custom code system takes concepts.csv" in response.content.decode()
