"""`$expunge` of previous versions: an instance now, a type as a job (exact when a chunk runs again), who may."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import Permission

from fhirjobs.expunge.steps import expunge
from fhirstore.models import Resource, ResourceVersion
from jobsite.tokens import token_for
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import FhirClient, assert_outcome, store

pytestmark = pytest.mark.django_db(transaction=True)

PREVIOUS_VERSIONS = {
    "resourceType": "Parameters",
    "parameter": [{"name": "expungePreviousVersions", "valueBoolean": True}],
}
SCOPES = ["fhir:read", "fhir:write", "admin:delete"]


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


def test_an_instance_loses_its_previous_versions_and_keeps_its_current_one(expunger):
    write_three_versions("p1", "p2")
    response = expunger.post("/fhir/Patient/p1/$expunge", PREVIOUS_VERSIONS)
    assert response.status_code == 200, response.content
    assert response.json()["parameter"] == [{"name": "count", "valueInteger": 2}]
    assert versions_of("p1") == [] and versions_of("p2") == [1, 2]
    assert expunger.get("/fhir/Patient/p1").json()["name"] == [{"family": "C"}]
    assert_outcome(expunger.post("/fhir/Patient/nope/$expunge", PREVIOUS_VERSIONS), 404)


def test_a_type_is_expunged_by_a_job_with_its_count_on_the_status_url(expunger, bus):
    write_three_versions(*(f"p{n}" for n in range(7)))
    kicked = expunger.post("/fhir/Patient/$expunge", PREVIOUS_VERSIONS, HTTP_PREFER="respond-async")
    assert_outcome(kicked, 202, "has started")
    status = kicked["Content-Location"].removeprefix("http://testserver")
    assert expunger.get(status).status_code == 202
    bus.drain()
    done = expunger.get(status)
    assert done.status_code == 200 and done.json()["parameter"] == [{"name": "count", "valueInteger": 14}]
    assert ResourceVersion.objects.count() == 0 and Resource.objects.count() == 7


@pytest.mark.parametrize(
    "body, problem",
    [
        ({"resourceType": "Parameters"}, "needs expungePreviousVersions=true"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "expungeDeletedResources", "valueBoolean": True}]},
            "not supported: expungeDeletedResources",
        ),
        ({"resourceType": "Patient"}, "takes a Parameters resource"),
    ],
)
def test_what_is_not_done_yet_is_a_400(expunger, body, problem):
    store(patient("p1", name=[{"family": "A"}]))
    assert_outcome(expunger.post("/fhir/Patient/p1/$expunge", body), 400, problem)


def test_a_type_expunge_needs_respond_async_and_ordinary_users_get_403(expunger, django_user_model):
    assert_outcome(expunger.post("/fhir/Patient/$expunge", PREVIOUS_VERSIONS), 400, "respond-async")
    plain = FhirClient(f"Bearer {token_for(django_user_model.objects.create_user('plain'), SCOPES)}")
    assert_outcome(plain.post("/fhir/Patient/$expunge", PREVIOUS_VERSIONS, HTTP_PREFER="respond-async"), 403)


@dataclass
class ChunkContext:
    data: dict[str, Any]
    instance_id: uuid.UUID = field(default_factory=uuid.uuid4)
    chunk_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def check_cancelled(self) -> None:
        pass


def test_a_chunk_run_again_counts_the_same_and_deletes_no_newer_version():
    write_three_versions("p1")
    context = ChunkContext({"type": "Patient", "ids": ["p1"]})
    assert expunge(context, sink=None) == 2
    store(patient("p1", name=[{"family": "D"}]))  # version 3 becomes a previous version after the chunk ran
    assert expunge(context, sink=None) == 2
    assert versions_of("p1") == [3]
