"""`/control/scripts`: superusers with a token (or a session) manage custom scripts; everyone else is refused."""

import pytest
from django.contrib.auth import get_user_model
from django_celery_beat.models import PeriodicTask
from rest_framework.test import APIClient

from jobsite.tokens import token_for
from scheduling.models import CustomScript, ScriptAudit

pytestmark = pytest.mark.django_db

SCRIPT = """\
from scheduling import scheduled

@scheduled(cron="*/10 * * * * ?")
def ping():
    pass
"""


@pytest.fixture(autouse=True)
def scripts_on(settings):
    settings.CUSTOM_SCRIPTS_ENABLED = True


def client_for(username: str, superuser: bool, keyword: str = "Bearer") -> APIClient:
    user = get_user_model().objects.create_user(username, password="pw", is_superuser=superuser, is_staff=superuser)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {token_for(user)}")
    return client


@pytest.fixture
def root() -> APIClient:
    return client_for("root", superuser=True)


def test_a_superuser_uploads_a_script_and_its_job_is_scheduled(root):
    response = root.post("/control/scripts", {"name": "pinger", "source": SCRIPT}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["name"] == "pinger" and body["enabled"] is True and len(body["sha256"]) == 64
    assert body["jobs"] == [
        {
            "name": "scripts.pinger.ping",
            "schedule": {"cron": "*/10 * * * * ?", "timezone": "UTC"},
            "clustered": True,
            "enabled": True,
        }
    ]
    assert PeriodicTask.objects.get(name="scripts.pinger.ping").enabled
    assert ScriptAudit.objects.get().username == "root"


def test_get_put_delete_a_script(root):
    root.post("/control/scripts", {"name": "pinger", "source": SCRIPT}, format="json")

    assert root.get("/control/scripts/pinger").json()["source"] == SCRIPT
    assert [s["name"] for s in root.get("/control/scripts").json()] == ["pinger"]

    edited = root.put("/control/scripts/pinger", {"source": SCRIPT.replace("*/10", "*/20")}, format="json")
    assert edited.status_code == 200
    assert edited.json()["jobs"][0]["schedule"]["cron"] == "*/20 * * * * ?"

    disabled = root.put("/control/scripts/pinger", {"enabled": False}, format="json")
    assert disabled.json()["enabled"] is False
    assert not PeriodicTask.objects.get(name="scripts.pinger.ping").enabled

    assert root.delete("/control/scripts/pinger").status_code == 204
    assert root.get("/control/scripts/pinger").status_code == 404
    assert not PeriodicTask.objects.filter(name__startswith="scripts.").exists()


def test_a_script_that_does_not_compile_is_refused_with_its_line(root):
    response = root.post(
        "/control/scripts", {"name": "bad", "source": SCRIPT.replace("def ping():", "def ping(:")}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["line"] == 4
    assert "SyntaxError" in response.json()["reason"]
    assert not CustomScript.objects.exists()


def test_an_invalid_schedule_is_refused_with_its_line_and_nothing_is_scheduled(root):
    response = root.post("/control/scripts", {"name": "bad", "source": SCRIPT.replace("*/10", "77")}, format="json")

    assert response.status_code == 400
    reason = "cron '77 * * * * ?': the second field '77' is not valid"
    assert response.json() == {"errors": [f"invalid script: {reason} (line 3)"], "line": 3, "reason": reason}
    assert not PeriodicTask.objects.filter(name__startswith="scripts.").exists()


def test_a_refused_edit_keeps_the_script_as_it_was(root):
    root.post("/control/scripts", {"name": "pinger", "source": SCRIPT}, format="json")

    response = root.put("/control/scripts/pinger", {"source": "def nothing():\n    pass\n"}, format="json")

    assert response.status_code == 400
    assert response.json()["reason"] == "the script declares no @scheduled function"
    assert CustomScript.objects.get().source == SCRIPT


def test_missing_fields_are_named(root):
    response = root.post("/control/scripts", {"name": "x"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"errors": ["source: This field is required."]}


def test_a_taken_name_is_a_conflict(root):
    root.post("/control/scripts", {"name": "pinger", "source": SCRIPT}, format="json")

    assert root.post("/control/scripts", {"name": "pinger", "source": SCRIPT}, format="json").status_code == 409


def test_a_user_who_is_not_a_superuser_is_refused():
    operator = client_for("operator", superuser=False, keyword="Token")

    response = operator.post("/control/scripts", {"name": "pinger", "source": SCRIPT}, format="json")

    assert response.status_code == 403
    assert response.json() == {"errors": ["only superusers may manage custom scripts"]}
    assert operator.get("/control/scripts").status_code == 403
    assert not CustomScript.objects.exists()


def test_anonymous_requests_must_authenticate():
    response = APIClient().post("/control/scripts", {"name": "pinger", "source": SCRIPT}, format="json")

    assert response.status_code == 401


def test_everything_is_refused_while_custom_scripts_are_off(root, settings):
    settings.CUSTOM_SCRIPTS_ENABLED = False

    response = root.post("/control/scripts", {"name": "pinger", "source": SCRIPT}, format="json")

    assert response.status_code == 403
    assert response.json() == {
        "errors": ["custom scripts are switched off on this node (CUSTOM_SCRIPTS_ENABLED=false)"]
    }
    assert root.get("/control/scripts").status_code == 403


def test_a_superuser_session_works_too():
    get_user_model().objects.create_superuser("root", password="pw")
    client = APIClient()
    client.login(username="root", password="pw")

    assert client.post("/control/scripts", {"name": "pinger", "source": SCRIPT}, format="json").status_code == 201
