"""TERMINOLOGY_UPLOAD: `$upload-external-code-system` and `upload_terminology`, run in this process by `bus`."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from batch import control
from batch.control import JobStatus
from batch.models import JobInstance, WorkChunk
from fhirjobs.terminology.parameters import UploadFile, UploadRequest
from fhirjobs.terminology.services import start_upload
from fhirstore.models import Resource
from fhirstore.terminology import storage
from fhirstore.terminology.icd10cm import read_concepts
from fhirstore.terminology.models import (
    Closure,
    CodeSystemVersion,
    Concept,
    Designation,
    ParentLink,
    UploadedFile,
    VersionStatus,
)
from fhirstore.terminology.records import ConceptRecord
from tests.fhirstore.helpers import assert_outcome
from tests.fhirstore.terminology.helpers import ICD10CM, SLICE, parameters_of, upload_body

pytestmark = pytest.mark.django_db(transaction=True)


def lookup_display(client, code: str) -> str:
    return parameters_of(client.get(f"/fhir/CodeSystem/$lookup?system={ICD10CM}&code={code}"))["display"]["valueString"]


def independent_closure(version_id: int) -> set[tuple[str, str]]:
    """(ancestor, descendant) computed in Python from the stored links, for comparison."""
    parents = defaultdict(set)
    for child, parent in ParentLink.objects.filter(code_system_version_id=version_id).values_list("child", "parent"):
        parents[child].add(parent)
    pairs = set()
    for code in Concept.objects.filter(code_system_version_id=version_id).values_list("code", flat=True):
        seen, todo = {code}, [code]
        while todo:
            for parent in parents[todo.pop()] - seen:
                seen.add(parent)
                todo.append(parent)
        pairs |= {(ancestor, code) for ancestor in seen}
    return pairs


def stored_closure(version_id: int) -> set[tuple[str, str]]:
    return set(Closure.objects.filter(code_system_version_id=version_id).values_list("ancestor", "descendant"))


def test_async_upload_loads_the_file_and_makes_it_current(uploader, reader, bus, settings):
    settings.TERMINOLOGY_UPLOAD_CHUNK_CONCEPTS = 50  # several write transactions
    response = uploader.post(
        "/fhir/CodeSystem/$upload-external-code-system", upload_body(SLICE.read_bytes()), HTTP_PREFER="respond-async"
    )
    assert response.status_code == 202, response.content
    job_id = response["Content-Location"].rstrip("/").rsplit("/", 1)[-1]
    bus.drain()

    job = control.get_job(job_id)
    assert job.status == JobStatus.COMPLETED, job.error_message
    assert [step.step_id for step in job.steps] == ["load-concepts", "build-closure", "make-current"]
    version = CodeSystemVersion.objects.get(system=ICD10CM)
    assert (version.version, version.status, version.concept_count) == ("2026", VersionStatus.CURRENT, 284)
    assert job.report == {
        "system": ICD10CM,
        "version": "2026",
        "status": "CURRENT",
        "concepts": 284,
        "closureRows": version.closure_count,
    }
    assert stored_closure(version.id) == independent_closure(version.id)
    assert lookup_display(reader, "E11.9") == "Type 2 diabetes mellitus without complications"
    assert Resource.objects.get(resource_type="CodeSystem", logical_id="icd-10-cm").body["content"] == "not-present"
    assert not UploadedFile.objects.exists()  # the inline file, dropped once read


def test_the_cli_uploads_a_second_version_that_answers_only_once_made_current(uploader, reader, bus, tmp_path):
    start_upload(UploadRequest(ICD10CM, (UploadFile("slice", data=SLICE.read_bytes()),)), started_by="test")
    bus.drain()
    changed = tmp_path / "tabular.xml"
    changed.write_bytes(
        SLICE.read_bytes().replace(
            b"Type 2 diabetes mellitus without complications", b"Type 2 diabetes mellitus, no complications"
        )
    )
    out = StringIO()
    call_command("upload_terminology", ICD10CM, str(changed), "--dont-make-current", stdout=out)
    bus.drain()

    assert control.get_job(out.getvalue().strip()).status == JobStatus.COMPLETED
    versions = dict(CodeSystemVersion.objects.filter(system=ICD10CM).values_list("version", "status"))
    assert versions == {"2026": VersionStatus.CURRENT, "2026-2": VersionStatus.BUILDING}
    assert lookup_display(reader, "E11.9") == "Type 2 diabetes mellitus without complications"
    named = reader.get(f"/fhir/CodeSystem/$lookup?system={ICD10CM}&code=E11.9&version=2026-2")
    assert parameters_of(named)["display"]["valueString"] == "Type 2 diabetes mellitus, no complications"

    call_command("make_terminology_current", ICD10CM, "2026-2", stdout=StringIO())
    assert lookup_display(reader, "E11.9") == "Type 2 diabetes mellitus, no complications"
    versions = dict(CodeSystemVersion.objects.filter(system=ICD10CM).values_list("version", "status"))
    assert versions == {"2026": VersionStatus.SUPERSEDED, "2026-2": VersionStatus.CURRENT}


def test_chunks_run_twice_leave_every_concept_once_and_the_closure_exact():
    """What a worker killed after its chunk committed leads to: the engine runs the chunk again."""
    version = storage.new_version(ICD10CM, "twice")
    with SLICE.open("rb") as stream:
        records = list(read_concepts(stream))
    for again_skips in (False, True):
        for _ in range(2):
            for start in range(0, len(records), 40):
                storage.write_concepts(version.id, records[start : start + 40], again_skips=again_skips)
    for _ in range(2):
        for start in range(0, len(records), 40):
            storage.build_closure(version.id, [r.code for r in records[start : start + 40]])
    assert storage.counts(version.id)[0] == len(records) == len({r.code for r in records})
    assert stored_closure(version.id) == independent_closure(version.id)
    assert Designation.objects.filter(code_system_version_id=version.id).count() == sum(
        len(r.designations) for r in records
    )


def test_a_load_run_again_skips_the_chunks_written_and_writes_the_rest():
    """The load step's re-run after a worker was lost: the same chunks, the first ones already committed."""
    version = storage.new_version(ICD10CM, "again")
    with SLICE.open("rb") as stream:
        records = list(read_concepts(stream))
    chunks = [records[start : start + 40] for start in range(0, len(records), 40)]
    for chunk in chunks[:3]:
        storage.write_concepts(version.id, chunk, again_skips=True)
    for chunk in chunks:
        storage.write_concepts(version.id, chunk, again_skips=True)
    assert storage.counts(version.id)[0] == len(records)
    assert Designation.objects.filter(code_system_version_id=version.id).count() == sum(
        len(r.designations) for r in records
    )
    assert stored_closure(version.id) == independent_closure(version.id)  # ICD-10-CM's, written with the concepts


def dag_records(concepts: int, seed: int) -> list[ConceptRecord]:
    """Concepts with one to three parents each, parents before children, in a shuffled order."""
    chosen = random.Random(seed)
    records = [
        ConceptRecord(
            f"C{n}", f"Concept {n}", sorted({f"C{p}" for p in chosen.choices(range(n), k=chosen.randint(1, 3))})
        )
        if n
        else ConceptRecord("C0", "Root")
        for n in range(concepts)
    ]
    chosen.shuffle(records)
    return records


class Stopped(Exception):
    pass


def test_the_closure_built_level_by_level_is_exact_and_goes_on_where_it_stopped():
    version = storage.new_version("http://example.org/dag", "1")
    storage.write_concepts(version.id, dag_records(400, seed=5))
    levels = []

    def stop_after_the_second(closed: int) -> None:  # a worker lost after two statements committed
        levels.append(closed)
        if len(levels) == 2:
            raise Stopped

    with pytest.raises(Stopped):
        storage.close_levels(version.id, 30, after_each=stop_after_the_second)
    assert levels[0] == 1  # the root alone: every other concept waits on a parent
    assert Closure.objects.filter(code_system_version=version, ancestor="C0").count() == 1 + levels[1]

    assert storage.close_levels(version.id, 30) == 400 - 1 - levels[1]
    assert storage.close_remaining(version.id, 30) == 0
    assert stored_closure(version.id) == independent_closure(version.id)


def test_concepts_in_a_cycle_are_closed_by_walking_their_links():
    version = storage.new_version("http://example.org/cycle", "1")
    storage.write_concepts(
        version.id,
        [
            ConceptRecord("root", "Root"),
            ConceptRecord("a", "A", ["root", "b"]),
            ConceptRecord("b", "B", ["a"]),
            ConceptRecord("under", "Under b", ["b"]),
        ],
    )
    assert storage.close_levels(version.id, 10) == 1  # the root; a, b and under wait on the cycle
    assert storage.close_remaining(version.id, 10) == 3
    assert storage.close_remaining(version.id, 10) == 0
    assert stored_closure(version.id) == independent_closure(version.id)


def test_uploads_need_the_terminology_scope(reader, fhir):
    assert_outcome(
        reader.post("/fhir/CodeSystem/$upload-external-code-system", upload_body(b"<x/>")), 403, "'terminology' scope"
    )
    assert_outcome(
        fhir.post("/fhir/CodeSystem/$upload-external-code-system", upload_body(b"<x/>")), 403, "'terminology' scope"
    )


@pytest.mark.parametrize(
    "body, message",
    [
        ({"resourceType": "Parameters", "parameter": []}, "at least one file is required"),
        (upload_body(b"x", system="http://example.org/local"), "a custom code system needs a concepts.csv"),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "system", "valueUri": ICD10CM},
                    {"name": "file", "valueAttachment": {"url": "https://evil.example.org/x.xml"}},
                ],
            },
            "not under an allowed",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "system", "valueUri": ICD10CM},
                    {"name": "file", "valueAttachment": {"data": "***"}},
                ],
            },
            "data is not base64",
        ),
    ],
)
def test_bad_requests_are_400_with_every_problem(uploader, body, message):
    assert_outcome(uploader.post("/fhir/CodeSystem/$upload-external-code-system", body), 400, message)


def test_a_file_that_is_not_icd10cm_fails_the_job_with_the_reason(uploader, bus):
    response = uploader.post("/fhir/CodeSystem/$upload-external-code-system", upload_body(b"<ClaML/>"))
    job_id = parameters_of(response)["jobId"]["valueString"]
    bus.drain()
    job = control.get_job(job_id)
    assert job.status == JobStatus.FAILED and "root element is <ClaML>" in job.error_message
    assert not CodeSystemVersion.objects.filter(status=VersionStatus.CURRENT).exists()


def test_a_taken_version_label_is_refused(uploader, bus):
    start_upload(UploadRequest(ICD10CM, (UploadFile("slice", data=SLICE.read_bytes()),), "v1"), started_by="test")
    bus.drain()
    assert_outcome(
        uploader.post("/fhir/CodeSystem/$upload-external-code-system", upload_body(SLICE.read_bytes(), version="v1")),
        400,
        "already has a version 'v1'",
    )
    with pytest.raises(CommandError, match="already has a version"):
        call_command("upload_terminology", ICD10CM, str(SLICE), "--label", "v1", stdout=StringIO())


def test_a_version_is_deleted_in_chunks_and_stops_answering_at_once(reader, bus, monkeypatch):
    from fhirjobs.terminology import steps

    monkeypatch.setattr(steps, "DELETE_BATCH_ROWS", 50)  # several transactions per table
    start_upload(UploadRequest(ICD10CM, (UploadFile("slice", data=SLICE.read_bytes()),)), started_by="test")
    bus.drain()
    version = CodeSystemVersion.objects.get(system=ICD10CM)
    closure_rows = version.closure_count
    out = StringIO()
    call_command("delete_terminology", ICD10CM, "2026", stdout=out)
    assert_outcome(reader.get(f"/fhir/CodeSystem/$lookup?system={ICD10CM}&code=E11.9"), 404, "no a current version")
    bus.drain()

    job = control.get_job(out.getvalue().strip())
    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.report["rowsDeleted"]["concept"] == 284 and job.report["rowsDeleted"]["closure"] == closure_rows
    assert not CodeSystemVersion.objects.exists()
    for model in (Concept, Closure, ParentLink):
        assert not model.objects.exists()
    assert Resource.objects.get(resource_type="CodeSystem", logical_id="icd-10-cm").deleted
    with pytest.raises(CommandError, match="no version '2026'"):
        call_command("delete_terminology", ICD10CM, "2026", stdout=StringIO())


def test_inline_files_of_abandoned_uploads_are_dropped_a_day_later(uploader):
    from django.db import connection

    from fhirjobs.terminology.periodic import drop_abandoned_upload_files

    uploader.post("/fhir/CodeSystem/$upload-external-code-system", upload_body(b"<never read/>"))  # no bus: never runs
    assert UploadedFile.objects.count() == 1
    drop_abandoned_upload_files()
    assert UploadedFile.objects.count() == 1
    with connection.cursor() as cursor:
        cursor.execute("UPDATE terminology_uploadedfile SET created_at = now() - interval '25 hours'")
    drop_abandoned_upload_files()
    assert not UploadedFile.objects.exists()


def test_an_upload_of_the_previous_release_in_flight_at_an_upgrade_fails_with_a_reason(bus):
    """A v1 upload (parse → write-concepts → …) whose steps this release no longer has ends FAILED at once,
    saying why, instead of waiting forever for a worker that knows its version."""
    job = start_upload(UploadRequest(ICD10CM, (UploadFile("slice", data=SLICE.read_bytes()),)), started_by="test")
    JobInstance.objects.filter(id=job.id).update(definition_version=1)  # as the previous release started it
    WorkChunk.objects.filter(instance_id=job.id).update(target_step_id="parse")
    (announced,) = bus.take()

    bus.deliver(replace(announced, definition_version=1, target_step_id="parse"))
    bus.drain()

    failed = control.get_job(job.id)
    assert failed.status == JobStatus.FAILED
    assert "started by an earlier release" in JobInstance.objects.get(id=job.id).error_message
    assert not Concept.objects.exists()
