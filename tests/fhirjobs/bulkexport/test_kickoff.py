"""Kick-off: the protocol's answers, bad requests as OperationOutcomes, lenient handling, reuse and limits."""

import uuid
from io import StringIO

import pytest
from django.core.management import call_command

from batch.models import JobInstance
from fhirjobs.bulkexport.models import BulkExport
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import FhirClient, assert_outcome, store

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def stored_patient():
    store(patient("p1"))


def test_a_kick_off_answers_202_with_the_absolute_status_url(exporter):
    response = exporter.kick_off("/fhir/$export?_type=Patient")

    assert response.status_code == 202
    export = BulkExport.objects.get()
    assert response["Content-Location"] == f"http://testserver/fhir/$export-poll-status?_jobId={export.id}"
    assert JobInstance.objects.get(id=export.job_instance_id).definition_id == "BULK_EXPORT"


def test_a_running_export_answers_202_with_progress_and_a_short_retry_after(exporter):
    status_url = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"]

    response = exporter.fhir.get(status_url)

    assert response.status_code == 202
    assert response["X-Progress"] == "Queued"
    assert 1 <= int(response["Retry-After"]) <= 5


def test_a_post_kick_off_takes_a_parameters_resource(exporter):
    response = exporter.kick_off_post(
        "/fhir/$export",
        [
            {"name": "_type", "valueString": "Patient"},
            {"name": "_since", "valueInstant": "2020-01-01T00:00:00Z"},
            {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
            {"name": "_typeFilter", "valueString": "Patient?gender=female,male"},
        ],
    )

    assert response.status_code == 202, response.content
    parameters = JobInstance.objects.get().parameters
    assert parameters["types"] == ["Patient"] and parameters["type_filters"] == ["Patient?gender=female,male"]
    assert parameters["since"].startswith("2020-01-01T00:00:00")


@pytest.mark.parametrize(
    "path, text",
    [
        ("/fhir/$export?_type=Patient,Nonsense", "_type 'Nonsense' is not a resource type"),
        ("/fhir/$export?_since=yesterday", "_since 'yesterday' is not a FHIR instant"),
        ("/fhir/$export?_since=2024-13-01", "is not a FHIR instant"),
        ("/fhir/$export?patient=Patient/p1", "patient is not allowed at system level"),
        ("/fhir/$export?_outputFormat=text/csv", "_outputFormat 'text/csv' is not supported"),
        ("/fhir/$export?_shoeSize=9", "Parameter '_shoeSize' is not supported"),
        (
            "/fhir/$export?includeAssociatedData=_myPreset",
            "includeAssociatedData custom value '_myPreset' is not supported",
        ),
        ("/fhir/$export?_typeFilter=nonsense", "is not of the form Type?parameters"),
        ("/fhir/$export?_type=Patient&_typeFilter=Patient%3Fshoe-size%3D9", "Unknown search parameter 'shoe-size'"),
        ("/fhir/$export?_elements=name.given", "only top-level elements"),
        ("/fhir/Patient/$export?_type=Organization", "cannot be in a Patient compartment"),
        ("/fhir/Patient/$export?patient=Patient/nobody", "Unknown patient(s): Patient/nobody"),
    ],
)
def test_a_bad_kick_off_is_refused_with_400_and_an_operation_outcome(exporter, path, text):
    assert_outcome(exporter.kick_off(path), 400, text)
    assert not BulkExport.objects.exists() and not JobInstance.objects.exists()


def test_every_problem_is_listed_at_once(exporter):
    body = assert_outcome(exporter.kick_off("/fhir/$export?_type=Nonsense&_since=never&patient=Patient/p1"), 400)

    assert len(body["issue"]) == 3


def test_without_prefer_respond_async_the_kick_off_is_refused(exporter):
    assert_outcome(exporter.kick_off("/fhir/$export", prefer=""), 400, "Prefer: respond-async")
    assert_outcome(exporter.kick_off("/fhir/$export", prefer="handling=lenient"), 400, "Prefer: respond-async")


def test_lenient_handling_leaves_out_what_is_not_supported_and_says_so(exporter):
    response = exporter.kick_off(
        "/fhir/$export?_type=Patient,Nonsense&_shoeSize=9&_typeFilter=Patient%3Fshoe-size%3D9",
        prefer="respond-async, handling=lenient",
    )

    assert response.status_code == 202, response.content
    warnings = [issue["diagnostics"] for issue in response.json()["issue"] if issue["severity"] == "warning"]
    assert len(warnings) == 3
    parameters = JobInstance.objects.get().parameters
    assert parameters["types"] == ["Patient"] and parameters["type_filters"] == []


def test_lenient_handling_still_refuses_what_is_wrong_whatever_the_server(exporter):
    assert_outcome(exporter.kick_off("/fhir/$export?_since=never", prefer="respond-async; handling=lenient"), 400)
    assert_outcome(exporter.kick_off("/fhir/$export?patient=Patient/p1", prefer="respond-async,handling=lenient"), 400)


def test_an_unknown_group_is_404_and_a_deleted_one_410(exporter):
    from tests.fhirstore.helpers import delete

    assert_outcome(exporter.kick_off("/fhir/Group/nobody/$export"), 404, "Group/nobody")
    store({"resourceType": "Group", "id": "g1", "type": "person", "actual": True})
    delete("Group", "g1")
    assert_outcome(exporter.kick_off("/fhir/Group/g1/$export"), 410)


def test_a_post_that_is_not_parameters_is_refused(exporter):
    response = exporter.fhir.post("/fhir/$export", {"resourceType": "Patient"}, HTTP_PREFER="respond-async")

    assert_outcome(response, 400, "Parameters")


def test_an_identical_running_export_is_reused(exporter):
    first = exporter.kick_off("/fhir/$export?_type=Patient,Observation")
    second = exporter.kick_off("/fhir/$export?_type=Observation&_type=Patient")

    assert second.status_code == 202
    assert second["Content-Location"] == first["Content-Location"]
    assert BulkExport.objects.count() == 1 and JobInstance.objects.count() == 1


def test_a_different_export_or_another_users_is_not_reused(exporter, other_user_client):
    first = exporter.kick_off("/fhir/$export?_type=Patient")
    other_types = exporter.kick_off("/fhir/$export?_type=Observation")
    other_user = other_user_client.get("/fhir/$export?_type=Patient", HTTP_PREFER="respond-async")

    assert len({first["Content-Location"], other_types["Content-Location"], other_user["Content-Location"]}) == 3


def test_past_the_running_exports_limit_a_user_gets_429_with_retry_after(exporter, settings):
    settings.BULK_EXPORT_MAX_RUNNING_PER_USER = 2
    exporter.kick_off("/fhir/$export?_type=Patient")
    exporter.kick_off("/fhir/$export?_type=Observation")

    response = exporter.kick_off("/fhir/$export?_type=Condition")

    assert_outcome(response, 429, "2 of your exports are running")
    assert int(response["Retry-After"]) > 0


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/fhir/$export"),
        ("get", "/fhir/Patient/$export"),
        ("get", "/fhir/$export-poll-status?_jobId=x"),
        ("delete", "/fhir/$export-poll-status?_jobId=x"),
        ("get", "/fhir/$export-file/x"),
        ("get", "/fhir/$bulk-publish"),
        ("get", "/fhir/$bulk-publish-file/x"),
    ],
)
def test_every_export_endpoint_needs_credentials_even_where_anonymous_reads_are_allowed(settings, method, path):
    settings.FHIR_ALLOW_ANONYMOUS_READ = True

    response = getattr(FhirClient(), method)(path, HTTP_PREFER="respond-async")

    assert_outcome(response, 401)


def test_the_capability_statement_instantiates_bulk_data_and_lists_the_export_operations(fhir):
    statement = fhir.get("/fhir/metadata").json()

    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    assert [operation["name"] for operation in statement["rest"][0]["operation"]] == [
        "export",
        "import",
        "bulk-submit",
        "bulk-submit-status",
        "delete-expunge",
        "expunge",
        "hapi.fhir.replace-references",
        "hapi.fhir.bulk-patch",
    ]
    resources = {resource["type"]: resource for resource in statement["rest"][0]["resource"]}
    assert resources["Patient"]["operation"][0]["definition"].endswith("patient-export")
    assert resources["Group"]["operation"][0]["definition"].endswith("group-export")


@pytest.mark.django_db(transaction=True)
def test_concurrent_kick_offs_of_one_user_cannot_both_pass_the_limit(api_user, settings, bus):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from fhirjobs.bulkexport.exceptions import TooManyExports
    from fhirjobs.bulkexport.parameters import Level, parse_export_request
    from fhirjobs.bulkexport.services import kick_off

    settings.BULK_EXPORT_MAX_RUNNING_PER_USER = 1  # the jobs' messages stay on `bus`, not in Redis

    def start(resource_type: str) -> str:
        try:
            kick_off(
                api_user,
                parse_export_request(Level.SYSTEM, [("_type", resource_type)]),
                base_url="http://testserver/fhir",
                request_url="http://testserver/fhir/$export",
            )
            return "started"
        except TooManyExports:
            return "refused"
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = sorted(pool.map(start, ["Patient", "Observation", "Condition", "Encounter"]))

    assert outcomes == ["refused", "refused", "refused", "started"]
    assert BulkExport.objects.count() == 1


def test_one_id_the_job_id_a_client_polls_finds_the_job_on_every_operator_surface(exporter, admin_client):
    """HAPI's `_jobId` is the job instance id: job_status, the admin's search and /control/jobs take it."""
    job_id = exporter.kick_off("/fhir/$export?_type=Patient")["Content-Location"].split("_jobId=")[1]

    assert str(BulkExport.objects.get().job_instance_id) == job_id
    out = StringIO()
    call_command("job_status", job_id, stdout=out)
    assert out.getvalue().startswith(f"{job_id}  BULK_EXPORT")
    assert admin_client.get(f"/control/jobs/{job_id}").json()["instanceId"] == job_id
    found = admin_client.get("/admin/batch/jobinstance/", {"q": job_id})
    assert found.status_code == 200 and f"/admin/batch/jobinstance/{job_id}/change/" in found.content.decode()


def test_an_export_kicked_off_before_ids_were_one_still_answers_its_status_url(exporter):
    """Exports started before the `_jobId` was the job's id keep their own ids: their status URLs work on."""
    exporter.kick_off("/fhir/$export?_type=Patient")
    export = BulkExport.objects.get()
    BulkExport.objects.filter(id=export.id).update(id=uuid.uuid4())

    response = exporter.fhir.get(f"/fhir/$export-poll-status?_jobId={BulkExport.objects.get().id}")

    assert response.status_code == 202
