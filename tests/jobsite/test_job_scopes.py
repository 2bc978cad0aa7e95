"""Issue #29 (low): /control/jobs maps every job definition to the scopes a client's token needs to cancel,
restart or start its jobs — what its own endpoint needs — so a token without them cannot act on its user's
deletions or terminology loads either; a definition nobody mapped is the operators' alone."""

from __future__ import annotations

import pytest

from batch.control import get_job, start_job
from batch.registry import registry
from jobsite.auth import JOB_DEFINITION_SCOPES, UNSCOPED_JOB_DEFINITIONS
from jobsite.tokens import token_for
from tests.jobsite.helpers import with_token

pytestmark = pytest.mark.django_db


def test_every_registered_definition_has_scopes_or_is_deliberately_unscoped():
    registered = set(registry.ids())

    assert registered - JOB_DEFINITION_SCOPES.keys() - UNSCOPED_JOB_DEFINITIONS == set()
    assert JOB_DEFINITION_SCOPES.keys() - registered == set(), "a mapped id that no definition has (a typo?)"
    assert JOB_DEFINITION_SCOPES.keys() & UNSCOPED_JOB_DEFINITIONS == set()


def test_a_token_without_the_terminology_scope_cannot_cancel_its_users_value_set_expansion(django_user_model):
    alice = django_user_model.objects.create_user("alice")
    writer = with_token(token_for(alice, ["fhir:read", "fhir:write", "export", "import"]))
    terminologist = with_token(token_for(alice, ["terminology"]))
    job = start_job("VALUESET_EXPAND", {}, started_by="alice")

    refused = writer.delete(f"/control/jobs?instanceId={job.id}")
    assert refused.status_code == 403 and "'terminology' scope" in refused.json()["errors"][0]
    assert get_job(job.id).status == "QUEUED"
    assert terminologist.delete(f"/control/jobs?instanceId={job.id}").status_code == 202


def test_a_job_of_a_definition_nobody_mapped_is_acted_on_by_operators_only(django_user_model, define_job):
    definition = define_job(
        lambda b: b.first_step("emit", lambda context, sink: 0).last_step("work", lambda context, sink: 1)
    )
    alice = django_user_model.objects.create_user("alice")
    job = start_job(definition.id, {}, started_by="alice")

    refused = with_token(token_for(alice)).delete(f"/control/jobs?instanceId={job.id}")

    assert refused.status_code == 403 and "'control' scope" in refused.json()["errors"][0]
