"""`$expunge` as HAPI defines it: `expungeDeletedResources`, `expungePreviousVersions`, `expungeEverything` and
`limit`; an instance now, a type or the whole system as a job (exact when a chunk runs again), who may."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction

from fhirjobs.expunge.steps import expunge_page
from fhirstore.models import Resource, ResourceVersion
from fhirstore.snapshots import hold_snapshot
from jobsite.tokens import token_for
from tests.fhirjobs.deleteexpunge.helpers import keys_of, observation, rows_of_keys
from tests.fhirjobs.helpers import ChunkContext, patient
from tests.fhirstore.helpers import FhirClient, assert_outcome, delete, store

pytestmark = pytest.mark.django_db(transaction=True)

SCOPES = ["fhir:read", "fhir:write", "admin:delete"]


def parameters(*, limit: int | None = None, **flags: bool) -> dict:
    """A Parameters body: expungePreviousVersions=True etc., and `limit`."""
    given = [{"name": name, "valueBoolean": value} for name, value in flags.items()]
    return {
        "resourceType": "Parameters",
        "parameter": given + ([{"name": "limit", "valueInteger": limit}] * (limit is not None)),
    }


PREVIOUS_VERSIONS = parameters(expungePreviousVersions=True)


@pytest.fixture
def expunger(django_user_model) -> FhirClient:
    user = django_user_model.objects.create_user("expunger")
    user.user_permissions.add(Permission.objects.get(codename="expunge"))
    return FhirClient(f"Bearer {token_for(user, SCOPES)}")


def versions_of(logical_id: str) -> list[int]:
    return sorted(ResourceVersion.objects.filter(resource__logical_id=logical_id).values_list("version_id", flat=True))


def write_three_versions(*ids: str) -> None:
    for family in ("A", "B", "C"):
        store(*(patient(logical_id, name=[{"family": family}]) for logical_id in ids))


def count_of(response) -> int:
    assert response.status_code == 200, response.content
    [count] = response.json()["parameter"]
    return count["valueInteger"]


def run_job(client: FhirClient, url: str, body: dict, bus) -> int:
    """Kick the job off, run it, and read its count from the status URL."""
    kicked = client.post(url, body, HTTP_PREFER="respond-async")
    assert_outcome(kicked, 202, "has started")
    status = kicked["Content-Location"].removeprefix("http://testserver")
    assert client.get(status).status_code == 202
    bus.drain()
    return count_of(client.get(status))


def test_an_instance_loses_its_previous_versions_and_keeps_its_current_one(expunger):
    write_three_versions("p1", "p2")
    assert count_of(expunger.post("/fhir/Patient/p1/$expunge", PREVIOUS_VERSIONS)) == 2
    assert versions_of("p1") == [] and versions_of("p2") == [1, 2]
    assert expunger.get("/fhir/Patient/p1").json()["name"] == [{"family": "C"}]
    assert_outcome(expunger.post("/fhir/Patient/nope/$expunge", PREVIOUS_VERSIONS), 404)


def test_a_deleted_instance_goes_whole_with_expunge_deleted_resources_and_a_live_one_stays(expunger):
    write_three_versions("gone", "live")
    delete("Patient", "gone")
    body = parameters(expungeDeletedResources=True)
    assert count_of(expunger.post("/fhir/Patient/gone/$expunge", body)) == 4  # three versions and the deletion
    assert count_of(expunger.post("/fhir/Patient/live/$expunge", body)) == 0
    assert not Resource.objects.filter(logical_id="gone").exists()
    assert_outcome(expunger.get("/fhir/Patient/gone"), 404)
    assert versions_of("live") == [1, 2]


def test_an_instance_expunge_stops_at_the_limit_oldest_versions_first(expunger):
    write_three_versions("p1")
    store(patient("p1", name=[{"family": "D"}]))
    assert count_of(expunger.post("/fhir/Patient/p1/$expunge", parameters(expungePreviousVersions=True, limit=2))) == 2
    assert versions_of("p1") == [3]


def test_a_type_is_expunged_by_a_job_with_its_count_on_the_status_url(expunger, bus):
    write_three_versions(*(f"p{n}" for n in range(7)))
    assert run_job(expunger, "/fhir/Patient/$expunge", PREVIOUS_VERSIONS, bus) == 14
    assert ResourceVersion.objects.count() == 0 and Resource.objects.count() == 7


def test_the_system_level_expunges_the_deleted_resources_of_every_type_and_nothing_else(expunger, bus):
    write_three_versions("p1", "p2")
    store(observation("o1"), observation("o2"))
    delete("Patient", "p1")
    delete("Observation", "o1")
    gone = keys_of("Patient")[:1] + keys_of("Observation")[:1]

    assert run_job(expunger, "/fhir/$expunge", parameters(expungeDeletedResources=True), bus) == 4 + 2
    assert rows_of_keys(gone) == dict.fromkeys(rows_of_keys(gone), 0), "every table, index rows included"
    assert sorted(Resource.objects.values_list("logical_id", flat=True)) == ["o2", "p2"]
    assert versions_of("p2") == [1, 2], "previous versions were not asked for"


def test_expunge_everything_leaves_no_row_of_any_resource(expunger, bus):
    write_three_versions("p1", "p2")
    store(observation("o1", "Patient/p1"))
    delete("Patient", "p2")
    keys = keys_of("Patient") + keys_of("Observation")

    assert run_job(expunger, "/fhir/$expunge", parameters(expungeEverything=True), bus) == 3 + 4 + 1
    assert rows_of_keys(keys) == dict.fromkeys(rows_of_keys(keys), 0)
    assert_outcome(expunger.get("/fhir/Patient/p1"), 404)


def test_a_system_job_with_a_limit_removes_exactly_that_many_whole_resources_first_come(expunger, bus):
    for n in range(5):
        store(patient(f"p{n}"))
        delete("Patient", f"p{n}")  # two versions each
    assert run_job(expunger, "/fhir/$expunge", parameters(expungeDeletedResources=True, limit=5), bus) == 4
    assert sorted(Resource.objects.values_list("logical_id", flat=True)) == ["p2", "p3", "p4"]


def expunge_parameters(**given) -> dict[str, Any]:
    return {
        "urls": [],
        "deleted_resources": False,
        "previous_versions": False,
        "everything": False,
        "limit": None,
    } | given


def test_pages_of_one_job_share_its_limit_and_a_page_run_again_counts_the_same():
    write_three_versions("p1", "p2", "p3")
    first, second = keys_of("Patient")[:2], keys_of("Patient")[2:]
    job = uuid.uuid4()
    page = ChunkContext({"type": "Patient", "keys": first}, expunge_parameters(previous_versions=True, limit=5), job)
    assert expunge_page(page, sink=None) == 4
    assert expunge_page(page, sink=None) == 4, "run again: nothing more"
    last = ChunkContext({"type": "Patient", "keys": second}, page.parameters, job)
    assert expunge_page(last, sink=None) == 1
    assert ResourceVersion.objects.count() == 1


def test_a_page_run_again_deletes_no_newer_version():
    write_three_versions("p1")
    page = ChunkContext({"type": "Patient", "keys": keys_of("Patient")}, expunge_parameters(previous_versions=True))
    assert expunge_page(page, sink=None) == 2
    store(patient("p1", name=[{"family": "D"}]))  # version 3 becomes a previous version after the chunk ran
    assert expunge_page(page, sink=None) == 2
    assert versions_of("p1") == [3]


def test_a_resource_written_again_after_its_deletion_is_no_longer_a_deleted_one():
    store(patient("p1"))
    delete("Patient", "p1")
    page = ChunkContext({"type": "Patient", "keys": keys_of("Patient")}, expunge_parameters(deleted_resources=True))
    store(patient("p1"))  # listed while deleted; current when its page runs
    assert expunge_page(page, sink=None) == 0
    assert Resource.objects.get(logical_id="p1").version_id == 3


@pytest.mark.parametrize(
    "url, body, problem",
    [
        ("/fhir/Patient/p1/$expunge", {"resourceType": "Parameters"}, "needs one of expungeDeletedResources"),
        ("/fhir/Patient/p1/$expunge", parameters(expungePreviousVersions=False), "needs one of"),
        ("/fhir/Patient/p1/$expunge", parameters(expungePreviousVersions=True, limit=0), "may not be less than 1"),
        ("/fhir/Patient/$expunge", parameters(expungeEverything=True), "system-level operation"),
        ("/fhir/Patient/p1/$expunge", parameters(expungeEverything=True), "system-level operation"),
        ("/fhir/Patient/p1/$expunge", parameters(expungeEverythingElse=True), "not a parameter of $expunge"),
        ("/fhir/Patient/p1/$expunge", {"resourceType": "Patient"}, "takes a Parameters resource"),
    ],
)
def test_a_request_that_asks_for_nothing_or_too_much_is_a_400(expunger, url, body, problem):
    store(patient("p1", name=[{"family": "A"}]))
    assert_outcome(expunger.post(url, body, HTTP_PREFER="respond-async"), 400, problem)


def test_a_type_or_system_expunge_needs_respond_async_and_ordinary_users_get_403(expunger, django_user_model):
    assert_outcome(expunger.post("/fhir/Patient/$expunge", PREVIOUS_VERSIONS), 400, "respond-async")
    assert_outcome(expunger.post("/fhir/$expunge", PREVIOUS_VERSIONS), 400, "respond-async")
    plain = FhirClient(f"Bearer {token_for(django_user_model.objects.create_user('plain'), SCOPES)}")
    assert_outcome(plain.post("/fhir/$expunge", PREVIOUS_VERSIONS, HTTP_PREFER="respond-async"), 403)


def test_an_instance_expunge_is_refused_while_an_export_reads_its_type(expunger):
    write_three_versions("p1")
    with transaction.atomic():
        hold_snapshot(uuid.uuid4(), ["Patient"])
    assert_outcome(expunger.post("/fhir/Patient/p1/$expunge", PREVIOUS_VERSIONS), 409, "retry later")
    assert versions_of("p1") == [1, 2]
