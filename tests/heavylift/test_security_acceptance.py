"""Who may do what, against the real web process (gunicorn), with two client users, operators and scoped tokens.

Each row of docs/security.md's table, both ways: what a caller may do answers as it should, what it may not
answers 401, 403 or 404 (another user's job is indistinguishable from no job).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from batch.control import get_job, start_job
from jobsite.tokens import token_for
from tests.processes import free_port, gunicorn, wait_until_serving

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


class Caller:
    def __init__(self, base: str, token: str | None):
        self.base, self.token = base, token

    def __call__(self, method: str, path: str, body: object = None, **headers: str) -> tuple[int, object]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "Content-Type": "application/json",
                **headers,
                **({"Authorization": f"Bearer {self.token}"} if self.token else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, content = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, content = error.code, error.read()
        try:
            return status, json.loads(content) if content else None
        except ValueError:
            return status, content


@pytest.fixture
def web(processes):
    port = free_port()
    environment = {
        "NODE_ID": f"sec-{uuid.uuid4().hex[:8]}",
        "JOB_SCHEDULING": "false",
        "CUSTOM_SCRIPTS_ENABLED": "true",
    }
    server = gunicorn(port, environment, "--workers", "1", "--threads", "4", "--no-control-socket")
    processes.append(server)
    wait_until_serving(server)
    return f"http://127.0.0.1:{port}"


def test_roles_and_scopes_hold_on_every_endpoint(web):
    users = get_user_model().objects
    alice, bob = users.create_user("alice"), users.create_user("bob")
    ops, dashboard = users.create_user("ops", is_staff=True), users.create_user("dashboard")
    dashboard.user_permissions.add(Permission.objects.get(codename="operate"))  # a service account, not staff
    root = users.create_superuser("root", password=None)
    caller = {
        "anonymous": Caller(web, None),
        "alice": Caller(web, token_for(alice)),
        "bob": Caller(web, token_for(bob)),
        "ops": Caller(web, token_for(ops)),
        "dashboard (control scope)": Caller(web, token_for(dashboard, ["control"])),
        "alice fhir:read": Caller(web, token_for(alice, ["fhir:read"])),
        "alice export": Caller(web, token_for(alice, ["export"])),
        "root": Caller(web, token_for(root)),
        "root fhir:read": Caller(web, token_for(root, ["fhir:read"])),
    }
    job = start_job("DIAGNOSTIC_NOOP", {"chunks": 1}, started_by="alice").id
    start_job("DIAGNOSTIC_NOOP", {"chunks": 1}, started_by="bob")
    caller["alice"](
        "PUT", "/fhir/Patient/p1", {"resourceType": "Patient", "id": "p1"}, **{"Content-Type": "application/fhir+json"}
    )
    script = {
        "name": "s",
        "source": "from scheduling import scheduled\n@scheduled(every_seconds=60)\ndef f():\n  pass\n",
    }

    rows = [  # who, method, path, body, expected status
        ("anonymous", "GET", "/control/jobs", None, 401),
        ("alice", "GET", f"/control/jobs/{job}", None, 200),
        ("bob", "GET", f"/control/jobs/{job}", None, 404),
        ("bob", "DELETE", f"/control/jobs?instanceId={job}", None, 404),
        ("bob", "POST", f"/control/jobs/{job}/restart", None, 404),
        ("alice fhir:read", "GET", f"/control/jobs/{job}", None, 200),  # control needs no scope; owner decides
        ("ops", "GET", f"/control/jobs/{job}", None, 200),
        ("dashboard (control scope)", "GET", f"/control/jobs/{job}", None, 200),
        ("alice", "POST", "/control/jobs", {"jobDefinitionId": "DIAGNOSTIC_NOOP"}, 403),  # no client definitions
        ("ops", "POST", "/control/jobs", {"jobDefinitionId": "DIAGNOSTIC_NOOP", "parameters": {"chunks": 1}}, 201),
        ("alice", "DELETE", f"/control/jobs?instanceId={job}", None, 202),
        ("alice", "POST", f"/control/jobs/{job}/restart", None, 200),
        ("dashboard (control scope)", "DELETE", f"/control/jobs?instanceId={job}", None, 202),
        ("alice", "GET", "/control/scripts", None, 403),
        ("ops", "GET", "/control/scripts", None, 403),  # staff, but not a superuser
        ("root fhir:read", "GET", "/control/scripts", None, 403),
        ("root", "POST", "/control/scripts", script, 201),
        ("anonymous", "GET", "/fhir/Patient/p1", None, 401),
        ("alice fhir:read", "GET", "/fhir/Patient/p1", None, 200),
        ("alice export", "GET", "/fhir/Patient/p1", None, 403),
        ("alice fhir:read", "PUT", "/fhir/Patient/p2", {"resourceType": "Patient", "id": "p2"}, 403),
        ("alice", "PUT", "/fhir/Patient/p2", {"resourceType": "Patient", "id": "p2"}, 201),
        ("alice fhir:read", "GET", "/fhir/$export", None, 403),
        ("alice export", "GET", "/fhir/$export", None, 202),
    ]
    answered = []
    for who, method, path, body, expected in rows:
        status, document = caller[who](method, path, body, Prefer="respond-async")
        answered.append((who, method, path, status))
        assert status == expected, (who, method, path, document)
        if status >= 400:
            if path.startswith("/fhir"):
                assert document["resourceType"] == "OperationOutcome"
            elif path.startswith("/control/jobs"):
                assert list(document) == ["errors"]

    listed = {
        who: [j["startedBy"] for j in caller[who]("GET", "/control/jobs")[1]["results"]]
        for who in ("alice", "bob", "ops")
    }
    assert set(listed["alice"]) == {"alice"} and set(listed["bob"]) == {"bob"}
    assert set(listed["ops"]) == {"alice", "bob", "ops"}
    assert get_job(job).status == "CANCELLED"  # the operator's cancel; bob's changed nothing


def test_hostile_input_to_the_real_web_process_is_refused_and_it_keeps_answering(web):
    alice = Caller(web, token_for(get_user_model().objects.create_user("alice")))
    deep = b'{"resourceType":"Patient","extension":' + b"[" * 5000 + b"]" * 5000 + b"}"

    assert alice("POST", "/fhir/Patient", deep, **{"Content-Type": "application/fhir+json"})[0] == 400
    assert alice("POST", "/control/jobs", b'{"jobDefinitionId":' + b"[" * 5000 + b"]" * 5000 + b"}")[0] == 400
    assert alice("GET", "/fhir/Patient?family=a%00b")[0] == 400
    assert alice("POST", "/control/jobs", b"{}", **{"Content-Length": str(20 * 1024 * 1024)})[0] in (400, 413)
    assert alice("GET", "/fhir/Patient", **{"X-Huge": "x" * 20_000})[0] == 431  # gunicorn's header limit
    assert Caller(web, None)("GET", "/healthz")[0] == 200
