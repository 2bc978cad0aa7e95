"""`manage.py create_api_token USER` prints a token that the APIs accept; `manage.py demo` runs the whole stack."""
from __future__ import annotations

import io
import sys

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

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


@pytest.mark.acceptance
@pytest.mark.django_db(transaction=True)
def test_make_demo_brings_the_stack_up_runs_a_job_and_an_export_and_prints_where_things_are(processes, tmp_path):
    """What `make demo` runs, on ports and a log of its own (a real demo may be running beside the tests)."""
    web_port, flower_port = free_port(), free_port()
    demo = Process([sys.executable, "manage.py", "demo", "--exit-after", "--port", str(web_port),
                    "--stack-log", str(tmp_path / "stack.log")],
                   env={"FLOWER_PORT": str(flower_port), "BATCH_MAX_THREADS": "2", "SCHEDULER_THREAD_COUNT": "1",
                        "MEDIA_ROOT": str(tmp_path / "media")}, name="demo")
    processes.append(demo)

    assert demo.popen.wait(600) == 0, demo.output()[-5000:] + (tmp_path / "stack.log").read_text()[-5000:]
    output = demo.output()
    assert "DIAGNOSTIC_NOOP_GATED" in output and "COMPLETED" in output
    assert "export complete" in output and '"type": "Patient"' in output
    for shown in (f"http://127.0.0.1:{web_port}/admin/", f"http://127.0.0.1:{flower_port}/", "API token"):
        assert shown in output
