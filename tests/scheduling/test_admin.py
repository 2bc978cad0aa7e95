"""The admin is the durable dashboard: runs, scripts and their audit; script changes go through the service."""
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from scheduling.models import CustomScript, JobRun, RunOutcome, ScriptAudit

pytestmark = pytest.mark.django_db

SCRIPT = "from scheduling import scheduled\n\n@scheduled(every_seconds=60)\ndef tidy():\n    pass\n"


@pytest.fixture
def root_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    return client


def test_runs_scripts_and_audit_are_listed(root_client):
    JobRun.objects.create(job_name="app.jobs.tidy", tick=timezone.now(), node="n1", process="h:1",
                          started_at=timezone.now(), outcome=RunOutcome.SUCCEEDED)

    for page in ("jobrun", "customscript", "scriptaudit"):
        response = root_client.get(f"/admin/scheduling/{page}/")
        assert response.status_code == 200, page
    assert b"app.jobs.tidy" in root_client.get("/admin/scheduling/jobrun/").content


def test_adding_a_script_in_the_admin_validates_audits_and_schedules(root_client, settings):
    settings.CUSTOM_SCRIPTS_ENABLED = True

    refused = root_client.post("/admin/scheduling/customscript/add/",
                               {"name": "tidy", "source": SCRIPT.replace("60", "0"), "enabled": "on"})
    assert refused.status_code == 200
    assert b"line 3: every_seconds must be a whole number of seconds" in refused.content
    assert not CustomScript.objects.exists()

    accepted = root_client.post("/admin/scheduling/customscript/add/", {"name": "tidy", "source": SCRIPT, "enabled": "on"})
    assert accepted.status_code == 302
    assert ScriptAudit.objects.get().action == "created"


def test_the_admin_cannot_add_scripts_while_they_are_off(root_client, settings):
    settings.CUSTOM_SCRIPTS_ENABLED = False

    assert root_client.get("/admin/scheduling/customscript/add/").status_code == 403
