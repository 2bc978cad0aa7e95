"""`manage.py create_api_token USER` prints a token that the APIs accept; `manage.py demo` runs the whole stack."""

from __future__ import annotations

import io
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from tests.batch.factories import JobInstanceFactory
from tests.processes import Process, free_port

pytestmark = pytest.mark.django_db


def create_api_token(username: str) -> str:
    out = io.StringIO()
    call_command("create_api_token", username, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]  # the token is the last line printed


def test_create_api_token_prints_a_new_token_the_apis_accept_each_time():
    get_user_model().objects.create_user("integration")

    first, second = create_api_token("integration"), create_api_token("integration")

    assert first and second and first != second  # only hashes are kept: a token cannot be printed twice
    assert Client().get("/control/jobs").status_code in (401, 403)
    for token in (first, second):
        assert Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/control/jobs").status_code == 200
        assert Client(HTTP_AUTHORIZATION=f"Bearer {token}").get("/fhir/Patient").status_code == 200


def test_create_api_token_for_an_unknown_user_says_so():
    with pytest.raises(CommandError, match="no such user: 'nobody'"):
        create_api_token("nobody")


def create_user(*arguments: str) -> str:
    out = io.StringIO()
    call_command("create_user", *arguments, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def test_create_user_makes_a_client_with_a_token_that_sees_only_its_own_jobs_and_no_admin():
    JobInstanceFactory(started_by="someone-else")
    token = create_user("client-a", "--token", "--scopes", "fhir:read", "export", "--expires-in", "90")

    user = get_user_model().objects.get(username="client-a")
    assert not user.is_staff and not user.is_superuser and not user.has_usable_password()
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get("/fhir/Patient").status_code == 200
    jobs = api.get("/control/jobs")
    assert jobs.status_code == 200 and jobs.json()["results"] == [], "another user's job is not a client's to see"
    assert sorted(user.api_tokens.get().scopes) == ["export", "fhir:read"]
    session = Client()
    session.force_login(user)
    assert session.get("/admin/").status_code == 302, "not staff: the admin sends it to its login"


def test_create_user_operator_is_staff_without_superuser_and_may_use_the_dashboard(client):
    assert create_user("ops", "--operator") == "", "no token asked for, none printed"

    operator = get_user_model().objects.get(username="ops")
    assert operator.is_staff and not operator.is_superuser
    client.force_login(operator)
    assert client.get("/admin/batch/jobinstance/dashboard/").status_code == 200
    assert client.get("/admin/scheduling/scheduledjobschedule/").status_code == 200
    assert operator.has_perm("batch.change_jobinstance") and not operator.has_perm("auth.change_user")


def test_create_user_refuses_a_taken_name_and_leaves_no_user_when_the_token_is_refused():
    with pytest.raises(CommandError, match="the control scope is for operators"):
        create_user("client-b", "--token", "--scopes", "control")
    assert not get_user_model().objects.filter(username="client-b").exists()
    create_user("client-b")
    with pytest.raises(CommandError, match="a user 'client-b' exists already"):
        create_user("client-b")


@pytest.mark.acceptance
@pytest.mark.django_db(transaction=True)
def test_make_demo_brings_the_stack_up_runs_a_job_and_an_export_and_prints_where_things_are(processes, tmp_path):
    """What `make demo` runs, on ports and a log of its own (a real demo may be running beside the tests)."""
    web_port, flower_port = free_port(), free_port()
    demo = Process(
        [
            sys.executable,
            "manage.py",
            "demo",
            "--exit-after",
            "--port",
            str(web_port),
            "--stack-log",
            str(tmp_path / "stack.log"),
        ],
        env={
            "FLOWER_PORT": str(flower_port),
            "BATCH_MAX_THREADS": "2",
            "SCHEDULER_THREAD_COUNT": "1",
            "MEDIA_ROOT": str(tmp_path / "media"),
        },
        name="demo",
    )
    processes.append(demo)

    assert demo.popen.wait(600) == 0, demo.output()[-5000:] + (tmp_path / "stack.log").read_text()[-5000:]
    output = demo.output()
    assert "DIAGNOSTIC_NOOP_GATED" in output and "COMPLETED" in output
    assert "export complete" in output and '"type": "Patient"' in output
    for shown in (f"http://127.0.0.1:{web_port}/admin/", f"http://127.0.0.1:{flower_port}/", "API token"):
        assert shown in output
