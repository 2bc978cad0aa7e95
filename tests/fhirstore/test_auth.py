"""Who may use the FHIR API: API tokens (Bearer or Token), staff sessions, anonymous reads by setting."""

import pytest

from tests.fhirstore.helpers import FhirClient, assert_outcome, patient

pytestmark = pytest.mark.django_db

READS = ["/fhir/Patient?family=x", "/fhir/Patient/p1", "/fhir/Patient/p1/_history", "/fhir/Patient/p1/_history/1"]


@pytest.fixture
def stored_patient(fhir):
    fhir.put("/fhir/Patient/p1", patient(id="p1"))


@pytest.mark.parametrize("path", READS)
def test_reads_without_credentials_are_401(anonymous, stored_patient, path):
    response = anonymous.get(path)

    assert_outcome(response, 401, "credentials were not provided")
    assert response["WWW-Authenticate"] == "Bearer"


def test_the_capability_statement_is_public_as_clients_read_it_before_authenticating(anonymous):
    response = anonymous.get("/fhir/metadata")

    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"


@pytest.mark.parametrize("path", READS + ["/fhir/metadata"])
def test_bearer_tokens_work_on_every_read(token, stored_patient, path):
    assert FhirClient(f"Bearer {token}").get(path).status_code == 200


def test_bearer_tokens_work_on_writes_transactions_and_paging(token):
    client = FhirClient(f"Bearer {token}")

    assert client.post("/fhir/Patient", patient()).status_code == 201
    assert client.put("/fhir/Patient/p2", patient(id="p2")).status_code == 201
    assert client.post("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": []}).status_code == 200
    searchset = client.get("/fhir/Patient?_count=1").json()
    next_page = next(link["url"] for link in searchset["link"] if link["relation"] == "next")
    assert client.get(next_page).status_code == 200
    assert client.delete("/fhir/Patient/p2").status_code == 200


def test_token_keyword_works_too(token, stored_patient):
    client = FhirClient(f"Token {token}")

    assert client.get("/fhir/Patient/p1").status_code == 200
    assert client.post("/fhir/Patient", patient()).status_code == 201


def test_an_unknown_token_is_401(stored_patient):
    assert_outcome(FhirClient("Bearer not-a-real-token").get("/fhir/Patient/p1"), 401, "Invalid token")


@pytest.mark.parametrize(
    "write",
    [
        lambda client: client.post("/fhir/Patient", patient()),
        lambda client: client.put("/fhir/Patient/p1", patient(id="p1")),
        lambda client: client.delete("/fhir/Patient/p1"),
        lambda client: client.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": []}),
    ],
)
def test_writes_without_credentials_are_401_even_when_anonymous_reads_are_allowed(anonymous, settings, write):
    settings.FHIR_ALLOW_ANONYMOUS_READ = True

    assert_outcome(write(anonymous), 401)


@pytest.mark.parametrize("path", READS)
def test_anonymous_reads_work_when_the_setting_allows_them(anonymous, stored_patient, settings, path):
    settings.FHIR_ALLOW_ANONYMOUS_READ = True

    assert anonymous.get(path).status_code == 200


def test_anonymous_reads_are_off_by_default(settings):
    assert settings.FHIR_ALLOW_ANONYMOUS_READ is False


def test_staff_sessions_may_read_and_write(django_user_model):
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    client = FhirClient()
    client.client.force_login(staff)

    assert client.post("/fhir/Patient", patient()).status_code == 201
    assert client.get("/fhir/Patient").status_code == 200


def test_sessions_of_non_staff_users_are_403(django_user_model):
    user = django_user_model.objects.create_user("someone")
    client = FhirClient()
    client.client.force_login(user)

    assert_outcome(client.get("/fhir/Patient"), 403, "only for staff")
    assert_outcome(client.post("/fhir/Patient", patient()), 403)


@pytest.fixture
def scoped(api_user):
    from jobsite.tokens import token_for

    return lambda *scopes: FhirClient(f"Bearer {token_for(api_user, scopes)}")


def test_a_read_only_token_reads_but_may_not_write(scoped, stored_patient):
    reader = scoped("fhir:read")

    assert reader.get("/fhir/Patient/p1").status_code == 200
    assert (
        reader.client.post(
            "/fhir/Patient/_search", "family=x", content_type="application/x-www-form-urlencoded"
        ).status_code
        == 200
    )
    assert_outcome(reader.put("/fhir/Patient/p2", patient(id="p2")), 403, "'fhir:write' scope")
    assert_outcome(reader.delete("/fhir/Patient/p1"), 403, "'fhir:write' scope")


def test_a_write_only_token_may_not_read(scoped, stored_patient):
    writer = scoped("fhir:write")

    assert writer.put("/fhir/Patient/p2", patient(id="p2")).status_code == 201
    assert_outcome(writer.get("/fhir/Patient/p1"), 403, "'fhir:read' scope")


def test_export_needs_the_export_scope(scoped):
    response = scoped("fhir:read").get("/fhir/$export", HTTP_PREFER="respond-async")
    assert_outcome(response, 403, "'export' scope")


def test_import_needs_the_import_scope(django_user_model):
    from jobsite.tokens import token_for

    importer = django_user_model.objects.create_user("importer", is_staff=True)
    body = {"resourceType": "Parameters", "parameter": []}
    response = FhirClient(f"Bearer {token_for(importer, ['fhir:write'])}").post(
        "/fhir/$import", body, HTTP_PREFER="respond-async"
    )
    assert_outcome(response, 403, "'import' scope")


def test_reindex_needs_fhir_write(django_user_model):
    from jobsite.tokens import token_for

    operator = django_user_model.objects.create_user("reindexer", is_staff=True)
    response = FhirClient(f"Bearer {token_for(operator, ['fhir:read', 'control'])}").post(
        "/fhir/$reindex", {"resourceType": "Parameters", "parameter": []}
    )
    assert_outcome(response, 403, "'fhir:write' scope")
