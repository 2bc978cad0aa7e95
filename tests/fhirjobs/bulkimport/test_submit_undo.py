"""Undoing a `$bulk-submit`: `submissionStatus = stopped` takes back what the submission loaded, and
`replacesManifestUrl` what only the replaced manifest brought — resources the imports created are removed,
those they changed get their earlier version back, a later write by someone else wins and is reported."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.db import transaction

from batch.api import RetryChunkLater
from batch.models import JobInstance
from batch.statuses import JobStatus
from fhirjobs.bulkimport import undo
from fhirjobs.bulkimport.models import BulkImport, ImportWrite, StagedId, UndoSummary
from fhirstore.authority import SERVER
from fhirstore.models import Resource
from fhirstore.storage import Write, read_resource, save_resources
from tests.fhirjobs.bulkimport.helpers import write_ndjson
from tests.fhirjobs.bulkimport.test_bulk_submit import manifest_url, parameters, status
from tests.fhirjobs.helpers import patient
from tests.fhirstore.helpers import assert_outcome

pytestmark = pytest.mark.django_db(transaction=True)


def store(*resources: dict) -> None:
    with transaction.atomic():
        save_resources([Write(resource) for resource in resources], authority=SERVER)


def manifest(file_root, name: str, *resources: dict) -> str:
    ndjson = write_ndjson(file_root / f"{name}.Patient.ndjson", *resources)
    path = file_root / f"{name}.json"
    path.write_text(json.dumps({"output": [{"type": "Patient", "url": ndjson.as_uri()}]}))
    return path.as_uri()


def family(logical_id: str) -> str | None:
    """The current version's family name; None when it is deleted."""
    row = Resource.objects.get(resource_type="Patient", logical_id=logical_id)
    return None if row.deleted else row.body["name"][0]["family"]


@pytest.fixture
def client(django_user_model):
    from django.contrib.auth.models import Permission

    from jobsite.tokens import token_for
    from tests.fhirstore.helpers import FhirClient

    user = django_user_model.objects.create_user("provider")
    user.user_permissions.add(Permission.objects.get(codename="start_import"))
    return FhirClient(f"Bearer {token_for(user, ['system/bulk-submit'])}")


def submit(client, submission_id: str, *more: dict) -> None:
    response = client.post("/fhir/$bulk-submit", parameters(submission_id, *more))
    assert response.status_code == 200, response.content


def submission_manifest(client, submission_id: str) -> dict:
    response = client.post("/fhir/$bulk-submit-status", parameters(submission_id))
    assert response.status_code == 200, response.content
    return response.json()


def test_a_submission_s_import_records_the_versions_it_wrote_and_not_the_unchanged_ones(client, file_root, bus):
    store(patient("same"), patient("changed"))
    submit(
        client,
        "s1",
        manifest_url(manifest(file_root, "m1", patient("same"), patient("changed", gender="male"), patient("new"))),
    )
    bus.drain()

    written = set(ImportWrite.objects.values_list("resource_type", "logical_id", "version_id"))
    assert written == {("Patient", "changed", 2), ("Patient", "new", 1)}
    assert set(ImportWrite.objects.values_list("import_id", flat=True)) == {BulkImport.objects.get().id}


def test_a_plain_import_records_nothing(importer, file_root):
    importer.run(write_ndjson(file_root / "Patient.ndjson", patient("p1")).as_uri())

    assert Resource.objects.filter(logical_id="p1").exists() and not ImportWrite.objects.exists()


def test_stopped_removes_what_the_submission_created_restores_what_it_changed_and_keeps_later_writes(
    client, file_root, bus
):
    store(patient("changed", gender="female"), patient("changed-twice"))
    first = manifest(file_root, "m1", patient("created"), patient("changed", gender="male"), patient("later"))
    second = manifest(file_root, "m2", patient("changed-twice", gender="male"))
    third = manifest(file_root, "m3", patient("changed-twice", gender="other"))
    submit(client, "s1", manifest_url(first), manifest_url(second))
    bus.drain()
    submit(client, "s1", manifest_url(third))
    bus.drain()
    store(patient("later", gender="unknown"))  # a client's write after the import: it wins

    submit(client, "s1", status("stopped"))
    bus.drain()

    assert family("created") is None
    changed = read_resource("Patient", "changed")
    assert (changed.version_id, changed.body["gender"]) == (3, "female")  # the earlier version, as a new one
    changed_twice = read_resource("Patient", "changed-twice")
    assert (changed_twice.version_id, "gender" in changed_twice.body) == (4, False)  # before both imports
    later = read_resource("Patient", "later")
    assert (later.version_id, later.body["gender"]) == (2, "unknown")
    assert not ImportWrite.objects.exists()
    undone = JobInstance.objects.get(definition_id="BULK_SUBMIT_UNDO")
    assert undone.status == JobStatus.COMPLETED
    assert (undone.report["removed"], undone.report["restored"], undone.report["kept"]) == (1, 2, 1)
    entries = [entry["diagnostics"] for entry in submission_manifest(client, "s1")["error"]]
    assert (
        "What the stopped submission loaded was undone: 1 resources removed, 2 restored to their earlier version, "
        "1 kept because written since; Patient/later is at version 2, written since"
    ) in entries


def test_a_stopped_submission_is_still_running_until_its_undo_ended(client, file_root, bus):
    submit(client, "s1", manifest_url(manifest(file_root, "m1", patient("p1"))))
    bus.drain()
    submit(client, "s1", status("stopped"))

    assert client.post("/fhir/$bulk-submit-status", parameters("s1")).status_code == 202
    bus.drain()
    assert client.post("/fhir/$bulk-submit-status", parameters("s1")).status_code == 200
    assert family("p1") is None


def test_a_corrected_manifest_replaces_the_earlier_one_and_removes_what_only_the_earlier_one_brought(
    client, file_root, bus
):
    store(patient("changed", gender="female"))
    earlier = manifest(file_root, "m1", patient("kept"), patient("dropped"), patient("changed", gender="male"))
    corrected = manifest(file_root, "m2", patient("kept", gender="male"), patient("added"))
    submit(client, "s1", manifest_url(earlier))
    bus.drain()

    submit(client, "s1", manifest_url(corrected), {"name": "replacesManifestUrl", "valueUrl": earlier})
    bus.drain()

    assert family("dropped") is None and family("added") == "added"
    kept = read_resource("Patient", "kept")
    assert (kept.version_id, kept.body["gender"]) == (2, "male")  # the corrected manifest's, not taken back
    changed = read_resource("Patient", "changed")
    assert (changed.version_id, changed.body["gender"]) == (3, "female")
    assert not StagedId.objects.exists()  # the replacing import's, kept for the undo, are gone with it
    submit(client, "s1", status("completed"))
    bus.drain()
    status_manifest = submission_manifest(client, "s1")
    assert {(item["manifestUrl"], item["count"]) for item in status_manifest["output"]} == {(corrected, 2)}
    assert status_manifest["error"] == [
        {
            "type": "OperationOutcome",
            "manifestUrl": earlier,
            "diagnostics": f"What {earlier} alone brought was undone: 1 resources removed, 1 restored to their "
            "earlier version, 0 kept because written since",
            "countSeverity": [{"code": "information", "count": 2}],
        }
    ]


def test_replacing_a_manifest_still_importing_cancels_its_import(client, file_root, bus):
    earlier = manifest(file_root, "m1", patient("p1"))
    submit(client, "s1", manifest_url(earlier))  # not run yet

    submit(
        client,
        "s1",
        manifest_url(manifest(file_root, "m2", patient("p2"))),
        {"name": "replacesManifestUrl", "valueUrl": earlier},
    )

    statuses = dict(JobInstance.objects.filter(definition_id="BULK_IMPORT").values_list("id", "status"))
    assert statuses[BulkImport.objects.get(manifest_url=earlier).job_instance_id] == JobStatus.CANCELLED
    bus.drain()
    assert family("p2") == "p2" and not Resource.objects.filter(logical_id="p1", deleted=False).exists()


@pytest.mark.parametrize(
    ("extra", "text"),
    [
        ((), "replacesManifestUrl goes with exactly one manifestUrl"),
        ((manifest_url("file:///elsewhere.json"),), "is not a manifest of submission s1"),
    ],
)
def test_replaces_manifest_url_needs_one_manifest_url_and_a_manifest_of_the_submission(client, file_root, extra, text):
    if extra:
        extra = (manifest_url(manifest(file_root, "m2", patient("p2"))),)
    submit(client, "s1")

    response = client.post(
        "/fhir/$bulk-submit",
        parameters("s1", *extra, {"name": "replacesManifestUrl", "valueUrl": "file:///nothing.json"}),
    )

    assert_outcome(response, 400, text)
    assert not BulkImport.objects.exists()


def test_an_undo_chunk_run_again_changes_nothing_and_keeps_the_counts_of_the_run_that_did_the_work(
    client, file_root, bus
):
    submit(client, "s1", manifest_url(manifest(file_root, "m1", patient("p1"), patient("p2"))))
    bus.drain()
    import_ids = [str(BulkImport.objects.get().id)]
    context = SimpleNamespace(
        parameters={"import_ids": import_ids}, data={"keys": [["Patient", "p1"], ["Patient", "p2"]]}
    )
    context.chunk_id, context.instance_id = BulkImport.objects.get().id, BulkImport.objects.get().id

    undo.undo(context, sink=None)  # the worker dies after the commit, before the chunk is marked done
    undo.undo(context, sink=None)  # the chunk runs again

    assert Resource.objects.get(logical_id="p1").version_id == 2 and family("p1") is None
    assert UndoSummary.objects.get().summary["removed"] == 2


def test_the_undo_waits_while_an_import_it_undoes_has_not_ended(client, file_root, bus):
    submit(client, "s1", manifest_url(manifest(file_root, "m1", patient("p1"))))  # queued, not run
    context = SimpleNamespace(parameters={"import_ids": [str(BulkImport.objects.get().id)]})

    with pytest.raises(RetryChunkLater, match="has not ended or still has a chunk running"):
        undo.list_writes(context, sink=None)
