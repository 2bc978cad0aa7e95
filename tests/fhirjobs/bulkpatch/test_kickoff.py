"""`$hapi.fhir.bulk-patch` over HTTP: kick-off, status, cancel, bad input, who may, the CapabilityStatement."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from fhirjobs.bulkpatch.parameters import report_outcome
from jobsite.tokens import token_for
from tests.fhirjobs.bulkpatch.helpers import observation, replace
from tests.fhirstore.helpers import FhirClient, assert_outcome, store

pytestmark = pytest.mark.django_db  # the tests that run the job commit, as the bus needs (marked so)

BULK_PATCH = "/fhir/$hapi.fhir.bulk-patch"
AMEND = replace("Observation.status", valueCode="amended")


def parameters(*urls: str, patch: dict | None = AMEND, **extra) -> dict:
    values = [{"name": "patch", "resource": patch}] if patch is not None else []
    values += [{"name": "url", "valueString": url} for url in urls]
    kinds = {"dryRun": "valueBoolean", "batchSize": "valueInteger"}
    values += [{"name": name, kinds[name]: value} for name, value in extra.items()]
    return {"resourceType": "Parameters", "parameter": values}


def status_path(response) -> str:
    return response["Content-Location"].removeprefix("http://testserver")


@pytest.mark.django_db(transaction=True)
def test_a_kick_off_answers_202_and_its_status_url_the_counts_and_failures(patcher, bus):
    store(observation("o1", valueString="x"), observation("o2"))
    kicked = patcher.post(BULK_PATCH, parameters("Observation", patch=replace("Observation.value", valueString="y")))
    assert_outcome(kicked, 202, "has started")
    running = patcher.get(status_path(kicked))
    assert running.status_code == 202 and running["X-Progress"]
    bus.drain()
    done = assert_outcome(
        patcher.get(status_path(kicked)), 200, "Bulk patch completed: 1 resources patched, 0 unchanged, 1 failed"
    )
    assert [(issue["severity"], issue["diagnostics"]) for issue in done["issue"][1:]] == [
        ("information", "Observation: 1 patched"),
        ("error", "Observation/o2: replace at Observation.value: the path matches 0 elements, replace takes one"),
    ]


def test_a_dry_run_report_answers_the_diffs():
    report = {
        "dry_run": True,
        "patched": {"Observation": 1},
        "total": 1,
        "unchanged": 0,
        "failed_count": 0,
        "failed": {},
        "diffs": [{"resource": "Observation/o1", "element": "status", "before": "final", "after": "amended"}],
    }
    assert [issue["diagnostics"] for issue in report_outcome(report)["issue"]] == [
        "Bulk patch dry run completed: 1 resources would be patched, 0 unchanged, 0 failed",
        "Observation: 1 would be patched",
        "Observation/o1 status: 'final' → 'amended'",
    ]


def test_cancel_answers_202_then_the_status_404(patcher):
    kicked = patcher.post(BULK_PATCH, parameters("Observation?"))
    assert_outcome(patcher.delete(status_path(kicked)), 202, "cancelled")
    assert_outcome(patcher.get(status_path(kicked)), 404)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"resourceType": "Patient"}, "takes a Parameters resource"),
        (parameters(), "at least one url"),
        (parameters("Observation?", patch=None), "a patch (a FHIRPath Patch Parameters"),
        (parameters("SearchParameter?"), "SearchParameter resources cannot be bulk-patched"),
        (parameters("Observation?nonsense=1"), "nonsense"),
        (parameters("Observation?", patch={"resourceType": "Parameters"}), "patch: the patch has no operation"),
        (parameters("Observation?", batchSize=0), "batch_size"),
    ],
)
def test_bad_input_is_a_400_before_anything_runs(patcher, body, message):
    assert_outcome(patcher.post(BULK_PATCH, body), 400, message)


def test_who_may(django_user_model):
    """A user without the permission, or a token without fhir:write: 403. Staff may."""
    plain = django_user_model.objects.create_user("plain")
    permitted = django_user_model.objects.create_user("permitted")
    permitted.user_permissions.add(Permission.objects.get(codename="bulk_patch"))
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    body = parameters("Observation?")
    for user, scopes in [(plain, ["fhir:read", "fhir:write"]), (permitted, ["fhir:read"])]:
        assert_outcome(FhirClient(f"Bearer {token_for(user, scopes)}").post(BULK_PATCH, body), 403)
    assert FhirClient(f"Bearer {token_for(staff, ['fhir:write'])}").post(BULK_PATCH, body).status_code == 202


def test_the_capability_statement_lists_the_operation(patcher):
    operations = patcher.get("/fhir/metadata").json()["rest"][0]["operation"]
    assert {
        "name": "hapi.fhir.bulk-patch",
        "definition": "http://hapifhir.io/fhir/OperationDefinition/hapi.fhir.bulk-patch",
    } in operations
