"""What real exports contain: `urn:uuid:<id>` cross references, and bad lines that must not stop the rest."""

import json
import re

import pytest

from fhirjobs.bulkimport.models import BulkImport
from fhirstore.models import Resource
from tests.fhirjobs.bulkimport.helpers import diagnostics, write_ndjson
from tests.fhirstore.helpers import SYNTHEA_NDJSON

pytestmark = pytest.mark.django_db(transaction=True)

LITERAL = re.compile(r'"reference":"(Patient|Encounter)/([A-Za-z0-9\-.]+)"')


def as_smart_export(
    source,
    target,
    types=(
        "Organization",
        "Location",
        "Practitioner",
        "PractitionerRole",
        "Patient",
        "Encounter",
        "Condition",
        "Procedure",
    ),
):
    """The fixture's files as SMART's bulk-data server writes them: Patient and Encounter references as
    `urn:uuid:<id>`. The files referenced come last, so the targets load after what points at them."""
    for resource_type in reversed(types):
        text = (source / f"{resource_type}.000.ndjson").read_text()
        (target / f"{resource_type}.000.ndjson").write_text(LITERAL.sub(r'"reference":"urn:uuid:\2"', text))
    return [(target / f"{resource_type}.000.ndjson").as_uri() for resource_type in reversed(types)]


def reference_of(resource_type: str, path: str) -> str:
    body = Resource.objects.filter(resource_type=resource_type).values_list("body", flat=True).first()
    for key in path.split("."):
        body = body[key]
    return body["reference"]


def test_urn_uuid_references_to_resources_of_the_import_resolve_whatever_the_file_order(importer, file_root, settings):
    settings.BULK_IMPORT_CHUNK_SIZE = 20
    urls = as_smart_export(SYNTHEA_NDJSON, file_root)
    assert "urn:uuid:" in (file_root / "Condition.000.ndjson").read_text()

    outcome = importer.run(*urls)

    assert " 0 failed, 0 warnings" in diagnostics(outcome)[0]
    assert re.fullmatch(r"Patient/[0-9a-f\-]+", reference_of("Condition", "subject"))
    assert re.fullmatch(r"Encounter/[0-9a-f\-]+", reference_of("Procedure", "encounter"))
    assert not Resource.objects.filter(body__icontains="urn:uuid").exists()


def test_urn_uuid_references_resolve_against_resources_already_stored(importer, file_root):
    importer.run(write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "p1"}).as_uri())

    importer.run(
        write_ndjson(
            file_root / "Observation.ndjson",
            {
                "resourceType": "Observation",
                "id": "o1",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "urn:uuid:p1"},
            },
        ).as_uri()
    )

    assert reference_of("Observation", "subject") == "Patient/p1"


def test_a_reference_to_nothing_is_kept_verbatim_with_a_warning_or_rejected_when_the_setting_says(
    importer, file_root, settings
):
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "urn:uuid:nowhere"},
    }
    url = write_ndjson(file_root / "Observation.ndjson", observation).as_uri()

    outcome = importer.run(url)

    assert diagnostics(outcome)[0] == "Import completed: 1 loaded, 0 unchanged, 0 failed, 1 warnings"
    assert any("urn:uuid:nowhere" in text for text in diagnostics(outcome)[1:])
    assert not any("bundle" in text for text in diagnostics(outcome)), "NDJSON files are not a bundle"
    assert reference_of("Observation", "subject") == "urn:uuid:nowhere"

    settings.BULK_IMPORT_UNRESOLVED_REFERENCE_IS_ERROR = True
    write_ndjson(file_root / "Observation.ndjson", {**observation, "id": "o2"})
    outcome = importer.run(url)
    assert diagnostics(outcome)[0] == "Import completed: 0 loaded, 0 unchanged, 1 failed, 0 warnings"


def test_bad_lines_go_to_the_error_file_by_file_and_line_and_the_good_ones_load(importer, file_root, settings):
    settings.BULK_IMPORT_MAX_LINE_BYTES = 1024
    good = {"resourceType": "Patient", "id": "good-1"}
    path = write_ndjson(
        file_root / "Patient.ndjson",
        good,
        "{not json",
        {"resourceType": "Nonsense", "id": "x"},
        "",
        {"resourceType": "Patient"},
        {"resourceType": "Patient", "id": "bad id!"},
        {"resourceType": "Patient", "id": "long", "text": "x" * 2000},
        {"resourceType": "Patient", "id": "good-2"},
    )

    outcome = importer.run(path.as_uri())

    assert diagnostics(outcome)[0] == "Import completed: 2 loaded, 0 unchanged, 5 failed, 0 warnings"
    error_file = next(issue for issue in outcome["issue"] if issue["severity"] == "error")["details"]["text"]
    response = importer.fhir.get(error_file.removeprefix("http://testserver"))
    assert response.status_code == 200 and response["Content-Type"] == "application/fhir+ndjson"
    errors = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert [error["issue"][0]["location"][0] for error in errors] == [
        f"{path.as_uri()}, line {number}" for number in (2, 3, 5, 6, 7)
    ]
    assert all(error["resourceType"] == "OperationOutcome" for error in errors)
    assert "not valid JSON" in errors[0]["issue"][0]["diagnostics"]
    assert "Nonsense" in errors[1]["issue"][0]["diagnostics"]
    assert "no id" in errors[2]["issue"][0]["diagnostics"]
    assert "longer than 1024 bytes" in errors[4]["issue"][0]["diagnostics"]
    assert sorted(Resource.objects.values_list("logical_id", flat=True)) == ["good-1", "good-2"]


def test_the_error_file_is_only_its_owners(importer, file_root, fhir):
    outcome = importer.run(write_ndjson(file_root / "Patient.ndjson", "{not json").as_uri())
    error_file = next(issue for issue in outcome["issue"] if issue["severity"] == "error")["details"]["text"]

    assert fhir.get(error_file.removeprefix("http://testserver")).status_code == 403  # not allowed to import
    assert BulkImport.objects.count() == 1


def test_a_conditional_reference_to_a_later_line_waits_for_load_deferred_and_only_its_chunk_goes_there(
    importer, file_root
):
    from batch import control

    practitioner = {
        "resourceType": "Practitioner",
        "id": "p1",
        "identifier": [{"system": "https://example.org/npi", "value": "42"}],
    }
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"code": "AMB"},
        "participant": [{"individual": {"reference": "Practitioner?identifier=https://example.org/npi|42"}}],
    }
    waiting = write_ndjson(file_root / "Encounter.ndjson", encounter, practitioner)  # the target comes after
    alone = write_ndjson(file_root / "Patient.ndjson", {"resourceType": "Patient", "id": "a"})

    outcome = importer.run(waiting.as_uri(), alone.as_uri())

    assert diagnostics(outcome)[0] == "Import completed: 3 loaded, 0 unchanged, 0 failed, 0 warnings"
    assert "Encounter: 1 loaded, 0 unchanged, 0 failed" in diagnostics(outcome)
    encounter_body = Resource.objects.get(resource_type="Encounter").body
    assert encounter_body["participant"][0]["individual"]["reference"] == "Practitioner/p1"
    job = control.get_job(BulkImport.objects.get().job_instance_id)
    assert (job.step("load-resources").total, job.step("load-deferred").total) == (2, 1)


def test_a_nul_escape_is_refused_in_the_rest_api_s_words_never_postgresql_s(importer, file_root):
    path = file_root / "Patient.ndjson"
    path.write_text(
        '{"resourceType":"Patient","id":"nul","name":[{"text":"a\\u0000b"}]}\n'
        '{"resourceType":"Patient","id":"backslash","name":[{"text":"a\\\\u0000b"}]}\n'
    )

    outcome = importer.run(path.as_uri())

    assert diagnostics(outcome)[0] == "Import completed: 1 loaded, 0 unchanged, 1 failed, 0 warnings"
    error_file = next(issue for issue in outcome["issue"] if issue["severity"] == "error")["details"]["text"]
    response = importer.fhir.get(error_file.removeprefix("http://testserver"))
    [error] = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert error["issue"][0]["diagnostics"] == "the line contains the escape \\u0000 (NUL), which cannot be stored"
    assert list(Resource.objects.values_list("logical_id", flat=True)) == ["backslash"]
