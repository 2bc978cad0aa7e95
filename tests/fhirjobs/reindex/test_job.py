"""The REINDEX job and how it is started: `$reindex`, `manage.py reindex`, cancel and restart, the dry run."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from batch import control
from batch.control import JobStatus
from fhirjobs.reindex.parameters import ReindexRequest
from fhirjobs.reindex.services import start_reindex
from fhirstore.authority import SERVER
from fhirstore.models import Resource, TokenIndex
from fhirstore.storage import Write, save_resources
from fhirstore.synthetic import generate_resources
from jobsite.tokens import token_for
from tests.fhirjobs.helpers import patient
from tests.fhirjobs.reindex.helpers import INDEX_TABLES, index_snapshot
from tests.fhirstore.helpers import FhirClient, assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)


def observations(count: int) -> list[dict]:
    return [
        {
            "resourceType": "Observation",
            "id": f"o{n:03}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4" if n % 2 else "2339-0"}]},
            "subject": {"reference": f"Patient/p{n % 3}"},
            "effectiveDateTime": f"2020-01-{n % 28 + 1:02}",
        }
        for n in range(count)
    ]


def wipe_index(resource_type: str) -> None:
    with connection.cursor() as cursor:
        for model in INDEX_TABLES:
            cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE resource_type = %s", [resource_type])


def job_of(response) -> str:
    assert response.status_code == 200, response.content
    parameters = {p["name"]: p for p in response.json()["parameter"]}
    assert parameters["status"]["valueUrl"].endswith(f"/control/jobs/{parameters['jobId']['valueString']}")
    assert response["Content-Location"] == parameters["status"]["valueUrl"]
    return parameters["jobId"]["valueString"]


def test_system_reindex_rebuilds_every_index_row_from_the_bodies(operator, bus):
    store(*observations(25), patient("p0", name=[{"family": "Zed"}]))
    fresh = index_snapshot()
    wipe_index("Observation")
    wipe_index("Patient")

    job_id = job_of(
        operator.post(
            "/fhir/$reindex", {"resourceType": "Parameters", "parameter": [{"name": "batchSize", "valueInteger": 4}]}
        )
    )
    bus.drain()

    job = control.get_job(job_id)
    assert job.status == JobStatus.COMPLETED
    assert [step.step_id for step in job.steps] == ["generate-ranges", "load-ids", "reindex"]
    assert job.step("load-ids").total == 2  # ranges of 10 pages × 4 ids: one for the 25 Observations, one Patient's
    assert job.step("reindex").total == 7 + 1  # pages of 4: 7 for the Observations, 1 for the Patient
    assert index_snapshot() == fresh
    assert index_snapshot(resource_type="Observation") and index_snapshot(resource_type="Patient")


def test_type_level_reindex_with_a_search_rebuilds_only_the_matching_resources(operator, bus):
    store(*observations(10))
    wipe_index("Observation")
    job_of(
        operator.post(
            "/fhir/Observation/$reindex",
            {"resourceType": "Parameters", "parameter": [{"name": "url", "valueString": "Observation?_id=o001,o002"}]},
        )
    )
    bus.drain()
    assert {row[0] for row in index_snapshot()["TokenIndex"]} == {"o001", "o002"}


def test_rebuilding_chosen_parameters_leaves_the_others_rows_alone(operator, bus):
    store(*observations(6))
    TokenIndex.objects.filter(param__in=["code", "status"]).delete()
    job_of(
        operator.post(
            "/fhir/Observation/$reindex",
            {"resourceType": "Parameters", "parameter": [{"name": "searchParameter", "valueString": "code"}]},
        )
    )
    bus.drain()
    params = set(TokenIndex.objects.values_list("param", flat=True))
    assert "code" in params and "status" not in params


@pytest.mark.parametrize(
    "parameters, problem",
    [
        ([{"name": "url", "valueString": "Nonsense?"}], "Unknown resource type"),
        ([{"name": "url", "valueString": "Observation?nonsense=1"}], "Unknown search parameter"),
        ([{"name": "batchSize", "valueInteger": 0}], "'batch_size' must be at least 1"),
        ([{"name": "searchParameter", "valueString": "nonsense"}], "unknown search parameters: nonsense"),
        ([{"name": "everything", "valueBoolean": True}], "'everything' is not understood"),
    ],
)
def test_a_bad_reindex_request_is_a_400_and_starts_nothing(operator, parameters, problem):
    response = operator.post("/fhir/$reindex", {"resourceType": "Parameters", "parameter": parameters})
    assert_outcome(response, 400, problem)
    assert not control.list_jobs(definition_ids=["REINDEX"])


def test_a_type_level_url_must_be_of_that_type(operator):
    response = operator.post(
        "/fhir/Patient/$reindex",
        {"resourceType": "Parameters", "parameter": [{"name": "url", "valueString": "Observation?"}]},
    )
    assert_outcome(response, 400, "is not of type Patient")


def test_reindex_is_for_operators_only(fhir, anonymous):
    assert_outcome(fhir.post("/fhir/$reindex", {"resourceType": "Parameters"}), 403, "operators")
    assert_outcome(anonymous.post("/fhir/$reindex", {"resourceType": "Parameters"}), 401)
    assert_outcome(fhir.get("/fhir/Patient/p1/$reindex-dryrun"), 403, "operators")
    assert not control.list_jobs(definition_ids=["REINDEX"])


def test_an_operator_token_needs_the_control_and_fhir_write_scopes(django_user_model):
    user = django_user_model.objects.create_user("ops", is_staff=True)
    operator = FhirClient(f"Bearer {token_for(user, ['control', 'fhir:write'])}")
    read_only_operator = FhirClient(f"Bearer {token_for(user, ['control', 'fhir:read'])}")

    assert_outcome(read_only_operator.post("/fhir/$reindex", {"resourceType": "Parameters"}), 403, "fhir:write")
    assert operator.post("/fhir/$reindex", {"resourceType": "Parameters"}).status_code == 200


def test_a_restart_after_cancel_resumes_from_the_pages_not_yet_done(operator, bus):
    store(*observations(12))
    wipe_index("Observation")
    job = start_reindex(ReindexRequest(("Observation?",), batch_size=2), started_by="test")
    for _ in range(4):  # generate-ranges, load-ids, and the first two pages
        bus.deliver_next()
    control.cancel_job(job.id)
    bus.drain()
    done = control.get_job(job.id).step("reindex").done
    assert 0 < done < 6
    indexed_before = set(TokenIndex.objects.values_list("resource_id", flat=True))

    control.restart_job(job.id)
    bus.drain()

    assert control.get_job(job.id).status == JobStatus.COMPLETED
    assert control.get_job(job.id).step("reindex").done == 6
    assert len(set(TokenIndex.objects.values_list("resource_id", flat=True))) == 12
    assert indexed_before  # the pages done before the cancel were not redone (their chunks stayed COMPLETED)


def test_the_dry_run_shows_the_rows_a_reindex_would_write_and_writes_none(operator):
    store(*observations(1))
    wipe_index("Observation")
    response = operator.get("/fhir/Observation/o000/$reindex-dryrun")
    assert response.status_code == 200, response.content
    rows = [
        (p["name"], {part["name"]: part["valueString"] for part in p["part"]}) for p in response.json()["parameter"]
    ]
    assert ("token", {"param": "code", "system": "http://loinc.org", "code": "2339-0"}) in rows
    assert ("reference", {"param": "subject", "targetType": "Patient", "targetId": "p0"}) in rows
    assert (
        "date",
        {"param": "date", "low": "2020-01-01T00:00:00+00:00", "high": "2020-01-01T23:59:59.999999+00:00"},
    ) in rows
    assert not index_snapshot()["TokenIndex"]
    assert_outcome(operator.get("/fhir/Observation/unknown/$reindex-dryrun"), 404)


def test_the_command_starts_a_job_and_waits_for_it(bus):
    store(*observations(3))
    wipe_index("Observation")
    out = StringIO()
    call_command("reindex", "Observation", "--batch-size", "2", stdout=out)
    job_id = out.getvalue().split()[0]
    bus.drain()
    assert control.get_job(job_id).status == JobStatus.COMPLETED
    assert len(index_snapshot()["ReferenceIndex"]) == 3
    with pytest.raises(CommandError, match="Unknown resource type"):
        call_command("reindex", "Nonsense?", stdout=StringIO())


def test_generated_data_reindexes_to_exactly_what_its_writes_indexed(bus):
    with transaction.atomic():
        save_resources([Write(resource) for resource in generate_resources(patients=3, seed=7)], authority=SERVER)
    fresh = index_snapshot()
    for resource_type in set(Resource.objects.values_list("resource_type", flat=True)):
        wipe_index(resource_type)
    start_reindex(ReindexRequest(batch_size=50), started_by="test")
    bus.drain()
    assert index_snapshot() == fresh


def test_ranges_split_a_type_by_id_and_cover_it_exactly(bus):
    store(*observations(25))
    wipe_index("Observation")
    job = start_reindex(ReindexRequest(("Observation?",), batch_size=1), started_by="test")  # ranges of 10 ids
    bus.drain()
    job = control.get_job(job.id)
    assert job.step("generate-ranges").done == 1 and job.step("load-ids").total == 3  # 10 + 10 + 5
    assert job.step("reindex").total == 25 and job.combined_records_processed >= 25
    assert len({row[0] for row in index_snapshot()["TokenIndex"]}) == 25
