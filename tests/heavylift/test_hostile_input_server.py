"""Hostile input against the real web process (gunicorn, as the Procfile runs it), not Django's test client.

tests/heavylift/test_hostile_input.py covers every case in-process, where a body's size is a header and
/healthz answers from the same process whatever happened. Here the bodies are really sent (33 MiB over the
FHIR limit, 2 MiB over the control limit, 40 MiB chunked with no Content-Length), the requests without
`Content-Type` really have none, and after each one a new connection asks the same server for /healthz.
One server for the module: it starts in a few seconds, and each request is refused in milliseconds.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import pytest
from django.contrib.auth import get_user_model

from jobsite.tokens import token_for
from tests.processes import STARTUP_TIMEOUT, free_port, gunicorn, stop_all, wait_until_serving

pytestmark = pytest.mark.acceptance

MiB = 1024 * 1024
FHIR_JSON = {"Content-Type": "application/fhir+json"}
CONTROL_JSON = {"Content-Type": "application/json"}
NO_CONTENT_TYPE: dict[str, str] = {}  # http.client adds none of its own
DEEP_RESOURCE = b'{"resourceType":"Patient","extension":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
NUL_ESCAPE = b'{"resourceType":"Patient","id":"p1","name":[{"family":"a\\u0000b"}]}'


class Server(NamedTuple):
    host: str
    port: int
    authorization: dict[str, str]


def pieces(count: int, piece: bytes) -> Iterator[bytes]:
    """A body http.client sends with `Transfer-Encoding: chunked` and no Content-Length."""
    for _ in range(count):
        yield piece


# (name, method, path, body, headers, expected status, words of the error message); the large bodies are made
# when their test runs, not when the suite is collected.
HOSTILE = [
    (
        "fhir: a real 33 MiB body",
        "POST",
        "/fhir/Patient",
        lambda: b" " * (33 * MiB),
        FHIR_JSON,
        413,
        "at most 33554432",
    ),
    (
        "control: a real 2 MiB body",
        "POST",
        "/control/jobs",
        lambda: b" " * (2 * MiB),
        CONTROL_JSON,
        413,
        "at most 1048576",
    ),
    (
        "fhir: JSON nested 50,000 deep, no Content-Type",
        "POST",
        "/fhir/Patient",
        DEEP_RESOURCE,
        NO_CONTENT_TYPE,
        400,
        "nests deeper",
    ),
    (
        "fhir: \\u0000 in a string, no Content-Type",
        "PUT",
        "/fhir/Patient/p1",
        NUL_ESCAPE,
        NO_CONTENT_TYPE,
        400,
        "\\u0000",
    ),
    ("fhir: \\u0000 in a string", "POST", "/fhir/Patient", NUL_ESCAPE, FHIR_JSON, 400, "\\u0000"),
    (
        "control: \\u0000 in parameters",
        "POST",
        "/control/jobs",
        b'{"jobDefinitionId":"DIAGNOSTIC_NOOP","parameters":{"x\\u0000":1}}',
        CONTROL_JSON,
        400,
        "\\u0000",
    ),
    # Without Content-Length Django reads no body at all: nothing of the 40 MiB reaches a parser.
    (
        "fhir: 40 MiB chunked, no Content-Length",
        "POST",
        "/fhir/Patient",
        lambda: pieces(40, b"[" * MiB),
        FHIR_JSON,
        400,
        "no body",
    ),
]


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker) -> Iterator[Server]:
    """One gunicorn for the module, with the Procfile's worker class (threads), on the test database, and an
    operator's token committed there for it (no test transaction to flush after each case: the cases store nothing)."""
    port = free_port()
    server = gunicorn(
        port,
        {"NODE_ID": f"hostile-{uuid.uuid4().hex[:8]}", "JOB_SCHEDULING": "false"},
        *("--workers", "1", "--threads", "2", "--no-control-socket"),
    )
    with django_db_blocker.unblock():
        operator = get_user_model().objects.create_user(f"hostile-{uuid.uuid4().hex[:8]}", is_staff=True)
        authorization = {"Authorization": f"Bearer {token_for(operator)}"}
    try:
        wait_until_serving(server, STARTUP_TIMEOUT)
        yield Server("127.0.0.1", port, authorization)
    finally:
        stop_all([server])
        with django_db_blocker.unblock():
            operator.delete()


def send(
    server: Server,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request on a connection of its own. A server answering before it has read the body (413) may close
    the connection while the body is still being sent: the answer is read all the same, as clients do."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        try:
            connection.request(method, path, body=body, headers=headers or {})
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "name, method, path, body, headers, expected, message", HOSTILE, ids=[case[0] for case in HOSTILE]
)
def test_the_real_server_refuses_hostile_input_and_still_answers(
    web, name, method, path, body, headers, expected, message
):
    status, content = send(web, method, path, body() if callable(body) else body, {**headers, **web.authorization})

    assert status == expected, content[:500]
    document = json.loads(content)
    if path.startswith("/fhir"):
        assert document["resourceType"] == "OperationOutcome", document
        assert message in document["issue"][0]["diagnostics"], document
    else:
        assert message in document["errors"][0], document
    assert send(web, "GET", "/healthz")[0] == 200
