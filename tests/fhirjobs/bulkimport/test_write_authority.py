"""Issue #29 item 1: one authority check on every write path. A SearchParameter reaches the store only from a
caller that may manage them, whichever path it takes: REST, bundles, `$import`, `$bulk-submit` — the storage
layer refuses it otherwise, and an import reports the line as an error instead of skipping it silently."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction

from fhirjobs.bulkimport.models import ImportIssue
from fhirstore.authority import CLIENT, SERVER
from fhirstore.exceptions import Forbidden
from fhirstore.models import CustomSearchParameter, Resource
from fhirstore.storage import (
    Write,
    delete_resource,
    save_changed_resources,
    save_resources,
)
from jobsite.tokens import token_for
from tests.fhirjobs.bulkimport.helpers import Importer, diagnostics, write_ndjson
from tests.fhirstore.helpers import FhirClient

pytestmark = pytest.mark.django_db(transaction=True)

# The probe of the issue: the built-in Patient?identifier replaced by another element's identifiers.
HIJACK = {
    "resourceType": "SearchParameter",
    "id": "pid",
    "url": "http://example.org/SearchParameter/pid",
    "name": "identifier",
    "status": "active",
    "description": "hijack",
    "code": "identifier",
    "base": ["Patient"],
    "type": "token",
    "expression": "Patient.generalPractitioner.identifier",
}
PATIENT = {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:s", "value": "1"}]}


def data_provider(django_user_model, username="provider", **flags):
    """A `$bulk-submit` data provider: allowed to import (bulkimport.start_import), nothing more."""
    user = django_user_model.objects.create_user(username, **flags)
    user.user_permissions.add(Permission.objects.get(codename="start_import"))
    return user


@pytest.mark.parametrize(
    "write",
    [
        lambda authority: save_resources([Write(dict(HIJACK))], authority=authority),
        lambda authority: save_changed_resources([Write(dict(HIJACK))], authority=authority),
        lambda authority: delete_resource("SearchParameter", "pid", authority=authority),
    ],
)
def test_the_storage_layer_refuses_a_search_parameter_write_without_the_authority(write):
    with transaction.atomic():
        save_resources([Write(dict(HIJACK))], authority=SERVER)
    with pytest.raises(Forbidden, match="manage_search_parameters"), transaction.atomic():
        write(CLIENT)
    assert Resource.objects.get(resource_type="SearchParameter").version_id == 1


def test_an_importer_who_may_not_manage_search_parameters_gets_an_error_line(django_user_model, bus, file_root):
    provider = data_provider(django_user_model)
    importer = Importer(FhirClient(f"Bearer {token_for(provider, ['import', 'fhir:read'])}"), bus)
    url = write_ndjson(file_root / "Patient.ndjson", PATIENT, HIJACK).as_uri()

    outcome = importer.run(url)

    assert diagnostics(outcome)[0] == "Import completed: 1 loaded, 0 unchanged, 1 failed, 0 warnings"
    assert not Resource.objects.filter(resource_type="SearchParameter").exists()
    assert not CustomSearchParameter.objects.exists()
    issue = ImportIssue.objects.get()
    assert (issue.line, "manage_search_parameters" in issue.message) == (2, True)


def test_a_bulk_submit_manifest_of_a_data_provider_cannot_bring_search_parameters(django_user_model, bus, file_root):
    provider = data_provider(django_user_model)
    client = FhirClient(f"Bearer {token_for(provider, ['import'])}")
    ndjson = write_ndjson(file_root / "SearchParameter.ndjson", HIJACK)
    manifest = file_root / "manifest.json"
    manifest.write_text(json.dumps({"output": [{"type": "SearchParameter", "url": ndjson.as_uri()}]}))
    submission = [
        {"name": "submitter", "valueIdentifier": {"system": "urn:providers", "value": "p"}},
        {"name": "submissionId", "valueString": "s1"},
    ]

    added = client.post(
        "/fhir/$bulk-submit",
        {
            "resourceType": "Parameters",
            "parameter": [
                *submission,
                {"name": "manifestUrl", "valueUrl": manifest.as_uri()},
                {"name": "submissionStatus", "valueCoding": {"code": "completed"}},
            ],
        },
    )
    assert added.status_code == 200, added.content
    bus.drain()

    status = client.post("/fhir/$bulk-submit-status", {"resourceType": "Parameters", "parameter": submission})
    assert status.status_code == 200, status.content
    assert [error["count"] for error in status.json()["error"]] == [1]
    assert not Resource.objects.filter(resource_type="SearchParameter").exists()


def test_an_operator_imports_search_parameters_while_staff(django_user_model, bus, file_root):
    operator = django_user_model.objects.create_user("ops", is_staff=True)
    importer = Importer(FhirClient(f"Bearer {token_for(operator, ['import', 'control'])}"), bus)
    url = write_ndjson(file_root / "SearchParameter.ndjson", HIJACK).as_uri()

    importer.kick_off(url)
    operator.is_staff = False  # between the kick-off and the load: the load wants the owner's standing still
    operator.save()
    bus.drain()
    assert ImportIssue.objects.get().line == 1
    assert not Resource.objects.filter(resource_type="SearchParameter").exists()

    operator.is_staff = True
    operator.save()
    assert diagnostics(importer.run(url))[0] == "Import completed: 1 loaded, 0 unchanged, 0 failed, 0 warnings"
    assert Resource.objects.filter(resource_type="SearchParameter").exists()


def test_a_batch_bundle_entry_writing_a_search_parameter_is_refused_on_its_own(fhir):
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": dict(HIJACK), "request": {"method": "PUT", "url": "SearchParameter/pid"}},
            {"resource": dict(PATIENT), "request": {"method": "PUT", "url": "Patient/p1"}},
            {"request": {"method": "DELETE", "url": "SearchParameter/pid"}},
        ],
    }

    response = fhir.post("/fhir", bundle)

    assert [entry["response"]["status"] for entry in response.json()["entry"]] == [
        "403 Forbidden",
        "201 Created",
        "403 Forbidden",
    ]
    assert not Resource.objects.filter(resource_type="SearchParameter").exists()
