"""Hostile input never gives a 500: every request below is answered 4xx in its API's error shape (an
OperationOutcome on /fhir, `{"errors": [...]}` on /control), and /healthz still answers.

In process, through Django's test client (a body's size is its Content-Length header here); the cases where the
server process matters run against a real gunicorn in test_hostile_input_server.py."""

import json

import pytest
from django.test import Client

from jobsite.tokens import token_for

pytestmark = pytest.mark.django_db(transaction=False)

FHIR_JSON = "application/fhir+json"
DEEP = lambda depth: ("[" * depth + "]" * depth).encode()  # noqa: E731
DEEP_RESOURCE = lambda depth: b'{"resourceType":"Patient","extension":' + DEEP(depth) + b"}"  # noqa: E731
PATIENT = {"resourceType": "Patient", "name": [{"family": "Ng"}]}
JOB = {"jobDefinitionId": "DIAGNOSTIC_NOOP", "parameters": {"chunks": 1}}
MB = 1024 * 1024

# (name, expected status, method, path, body, content type, extra headers); `body` bytes are sent as they are.
# Four are no errors but bounded answers, as FHIR servers and DRF give them: a huge `_count` or `pageSize` is
# capped at the largest page, a 100 kB search value matches nothing, a 1 MB name is stored (its index entry cut).
HOSTILE = [
    ("fhir: JSON nested 1000 deep", 400, "post", "/fhir/Patient", DEEP_RESOURCE(1000), FHIR_JSON, {}),
    ("fhir: JSON nested 101 deep", 400, "put", "/fhir/Patient/p1", DEEP_RESOURCE(101), FHIR_JSON, {}),
    ("fhir: JSON nested 100,000 deep", 400, "post", "/fhir", DEEP(100_000), FHIR_JSON, {}),
    (
        "fhir: bundle nested deep",
        400,
        "post",
        "/fhir",
        b'{"resourceType":"Bundle","type":"batch","entry":' + DEEP(2000) + b"}",
        FHIR_JSON,
        {},
    ),
    (
        "fhir: \\u0000 in a string",
        400,
        "post",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"family":"a\\u0000b"}]}',
        FHIR_JSON,
        {},
    ),
    # Issue #29: a body without Content-Type went past the edge's checks (RecursionError, \u0000 → 500).
    ("fhir: JSON nested 50,000 deep, no Content-Type", 400, "post", "/fhir/Patient", DEEP_RESOURCE(50_000), "", {}),
    (
        "fhir: \\u0000 in a string, no Content-Type",
        400,
        "put",
        "/fhir/Patient/p1",
        b'{"resourceType":"Patient","id":"p1","name":[{"family":"a\\u0000b"}]}',
        "",
        {},
    ),
    (
        "fhir: raw NUL byte in the body",
        400,
        "post",
        "/fhir/Patient",
        b'{"resourceType":"Patient","id":"a\x00"}',
        FHIR_JSON,
        {},
    ),
    (
        "fhir: lone high surrogate",
        400,
        "post",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"family":"\\ud800"}]}',
        FHIR_JSON,
        {},
    ),
    (
        "fhir: lone low surrogate",
        400,
        "post",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"family":"\\udc00x"}]}',
        FHIR_JSON,
        {},
    ),
    (
        "fhir: invalid UTF-8 body",
        400,
        "post",
        "/fhir/Patient",
        b'{"resourceType":"Patient","name":[{"family":"\xff\xfe"}]}',
        FHIR_JSON,
        {},
    ),
    (
        "fhir: 1 MB string in an indexed element",
        201,
        "post",
        "/fhir/Patient",
        json.dumps({**PATIENT, "name": [{"family": "x" * MB}]}).encode(),
        FHIR_JSON,
        {},
    ),
    ("fhir: NUL in a search value", 400, "get", "/fhir/Patient?family=a%00b", None, None, {}),
    ("fhir: NUL in a search parameter name", 400, "get", "/fhir/Patient?fam%00ily=a", None, None, {}),
    ("fhir: invalid UTF-8 in a search value", 400, "get", "/fhir/Patient?family=%ff%fe", None, None, {}),
    ("fhir: NUL in an id", 400, "get", "/fhir/Patient/a%00b", None, None, {}),
    (
        "fhir: NUL in a form search",
        400,
        "post",
        "/fhir/Patient/_search",
        b"family=a%00b",
        "application/x-www-form-urlencoded",
        {},
    ),
    ("fhir: negative _count", 400, "get", "/fhir/Patient?_count=-1", None, None, {}),
    ("fhir: huge _count", 200, "get", "/fhir/Patient?_count=99999999999999999999999999", None, None, {}),
    ("fhir: _count not a number", 400, "get", "/fhir/Patient?_count=ten", None, None, {}),
    ("fhir: id too long", 404, "get", "/fhir/Patient/" + "a" * 65, None, None, {}),
    (
        "fhir: id with bad characters",
        404,
        "put",
        "/fhir/Patient/a$b",
        json.dumps({**PATIENT, "id": "a$b"}).encode(),
        FHIR_JSON,
        {},
    ),
    ("fhir: unknown resource type", 404, "get", "/fhir/NotAType/1", None, None, {}),
    (
        "fhir: body larger than the limit",
        413,
        "post",
        "/fhir/Patient",
        b"{}",
        FHIR_JSON,
        {"CONTENT_LENGTH": str(64 * MB)},
    ),
    ("fhir: XML body", 415, "post", "/fhir/Patient", b"<Patient/>", "application/fhir+xml", {}),
    ("fhir: not JSON at all", 400, "post", "/fhir/Patient", b"{resourceType: Patient", FHIR_JSON, {}),
    ("fhir: JSON that is a string", 400, "post", "/fhir/Patient", b'"Patient"', FHIR_JSON, {}),
    ("fhir: huge string in a search value", 200, "get", "/fhir/Patient?family=" + "x" * 100_000, None, None, {}),
    ("fhir: bad _getpages id", 410, "get", "/fhir?_getpages=not-a-uuid", None, None, {}),
    ("fhir: bad export job id", 404, "get", "/fhir/$export-poll-status?_jobId=not-a-uuid", None, None, {}),
    ("fhir: export file that is no uuid", 404, "get", "/fhir/$export-file/..%2f..%2fetc%2fpasswd", None, None, {}),
    ("fhir: bad version id", 404, "get", "/fhir/Patient/p1/_history/x", None, None, {}),
    ("fhir: unknown endpoint", 404, "get", "/fhir/Patient/p1/$everything/extra/path", None, None, {}),
    (
        "fhir: oversized Authorization header",
        401,
        "get",
        "/fhir/Patient",
        None,
        None,
        {"HTTP_AUTHORIZATION": "Bearer " + "x" * 100_000},
    ),
    (
        "control: JSON nested 1000 deep",
        400,
        "post",
        "/control/jobs",
        b'{"jobDefinitionId":' + DEEP(1000) + b"}",
        "application/json",
        {},
    ),
    ("control: 20 MB body", 413, "post", "/control/jobs", b"{}", "application/json", {"CONTENT_LENGTH": str(20 * MB)}),
    (
        "control: \\u0000 in parameters",
        400,
        "post",
        "/control/jobs",
        b'{"jobDefinitionId":"DIAGNOSTIC_NOOP","parameters":{"x\\u0000":1}}',
        "application/json",
        {},
    ),
    (
        "control: invalid UTF-8 body",
        400,
        "post",
        "/control/jobs",
        b'{"jobDefinitionId":"\xff"}',
        "application/json",
        {},
    ),
    ("control: malformed JSON", 400, "post", "/control/jobs", b'{"jobDefinitionId":', "application/json", {}),
    (
        "control: form body",
        415,
        "post",
        "/control/jobs",
        b"jobDefinitionId=DIAGNOSTIC_NOOP",
        "application/x-www-form-urlencoded",
        {},
    ),
    (
        "control: multipart body",
        415,
        "post",
        "/control/jobs",
        b"--x\r\n\r\n--x--",
        "multipart/form-data; boundary=x",
        {},
    ),
    ("control: XML body", 415, "post", "/control/jobs", b"<job/>", "application/xml", {}),
    ("control: bad uuid", 404, "get", "/control/jobs/not-a-uuid", None, None, {}),
    ("control: bad uuid to cancel", 404, "delete", "/control/jobs?instanceId=%27%3B--", None, None, {}),
    ("control: NUL in instanceId", 400, "delete", "/control/jobs?instanceId=a%00", None, None, {}),
    ("control: bad uuid to restart", 404, "post", "/control/jobs/zzz/restart", None, None, {}),
    ("control: unknown jobStatus", 400, "get", "/control/jobs?jobStatus=%ff", None, None, {}),
    ("control: huge pageSize", 200, "get", "/control/jobs?pageSize=99999999999999999999", None, None, {}),
    ("control: negative page", 404, "get", "/control/jobs?page=-1", None, None, {}),
    (
        "control: parameters not an object",
        400,
        "post",
        "/control/jobs",
        json.dumps({**JOB, "parameters": [1, 2]}).encode(),
        "application/json",
        {},
    ),
    (
        "control: huge maxConcurrentChunks",
        400,
        "post",
        "/control/jobs",
        json.dumps({**JOB, "maxConcurrentChunks": 10**30}).encode(),
        "application/json",
        {},
    ),
    ("control: unknown endpoint", 404, "get", "/control/nothing-here", None, None, {}),
    (
        "control: Content-Length not a number",
        400,
        "post",
        "/control/jobs",
        b"{}",
        "application/json",
        {"CONTENT_LENGTH": "many"},
    ),
]


@pytest.fixture
def clients(django_user_model):
    operator = django_user_model.objects.create_user("operator", is_staff=True)
    token = token_for(operator)
    return Client(HTTP_AUTHORIZATION=f"Bearer {token}"), Client()


@pytest.mark.usefixtures("bus")
@pytest.mark.parametrize(
    "name, expected, method, path, body, content_type, headers", HOSTILE, ids=[case[0] for case in HOSTILE]
)
def test_hostile_input_is_refused_in_the_apis_error_shape(
    clients, name, expected, method, path, body, content_type, headers
):
    client, anonymous = clients
    send = getattr(client, method)
    if body is None:
        response = send(path, **headers)
    else:
        response = send(path, data=body, content_type=content_type, **headers)

    assert response.status_code == expected, response.content[:500]
    document = response.json()
    if expected < 300:
        pass
    elif path.startswith("/fhir"):
        assert document["resourceType"] == "OperationOutcome", document
    else:
        assert list(document) == ["errors"] and document["errors"], document
    assert anonymous.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "text, accepted",
    [
        (b'["\\ud83d\\ude00"]', True),  # a surrogate pair is fine
        (b'["\\ud83d"]', False),
        (b'["\\ude00"]', False),
        (b'["\\ud83dx\\ude00"]', False),
        (b'["\\\\ud800"]', True),  # an escaped backslash, then plain text
        (b'["a\\\\\\u0000"]', False),
        (b'["a\\\\u0000"]', True),
        (b"[" * 100 + b"]" * 100, True),
        (b"[" * 101 + b"]" * 101, False),
        (b'["' + b"[" * 200 + b'"]', True),  # brackets in strings are text
        (b"[" * 50 + b'"\\"]]]]"' + b"]" * 50, True),
        (b'{"a":' * 60 + b'[{"b":[' + b"1" + b"]}]" + b"}" * 60, True),
        (b'{"a":' * 99 + b"[[1]]" + b"}" * 99, False),
    ],
)
def test_the_edge_reads_json_escapes_and_depth_exactly(text, accepted, settings):
    from heavylift.edge import Refused, check_json

    settings.API_MAX_JSON_DEPTH = 100
    try:
        check_json(text)
    except Refused:
        assert not accepted
    else:
        assert accepted
