"""TERMINOLOGY_UPLOAD through real celery workers: the whole ICD-10-CM 2026 file by `$upload-external-code-system`
(async), then a second version by `upload_terminology --wait`, and an upload (of a code system with several parents
per concept) whose workers are SIGKILLed mid-load and mid-closure."""

from __future__ import annotations

import random
from importlib.resources import files
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import transaction

from batch.maintenance import run_maintenance_pass
from batch.models import WorkChunk
from batch.statuses import ChunkStatus, JobStatus
from fhirjobs.terminology.parameters import UploadFile, UploadRequest
from fhirjobs.terminology.services import start_upload
from fhirstore.authority import SERVER
from fhirstore.storage import Write, save_resources
from fhirstore.terminology.models import Closure, CodeSystemVersion, Concept, VersionStatus
from tests.fhirjobs.terminology.test_upload import independent_closure, lookup_display, stored_closure
from tests.fhirstore.terminology.helpers import ICD10CM, SLICE, parameters_of, upload_body
from tests.processes import (
    Process,
    chunks_held_by,
    kill_while_it_holds,
    locked_by_another_transaction,
    node_workers,
    wait_for_the_end,
    wait_until,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

FULL_FILE = files("simple_icd_10_cm") / "data" / "icd10c-tabular-April-1-2026.xml"
LOCAL = "http://example.org/CodeSystem/dag"
LOCAL_CONCEPTS = 300
SLICE_CONCEPTS = 284  # tests/fhirstore/terminology/icd10cm-tabular-slice.xml, which declares version 2026 as the file


def local_code_system() -> tuple[UploadFile, UploadFile]:
    """A custom CSV code system whose concepts have one to three parents each (the closure step's real work:
    ICD-10-CM, a tree, has its closure written with its concepts)."""
    chosen = random.Random(23)
    concepts = "CODE,DISPLAY\n" + "".join(f"C{n},Concept {n}\n" for n in range(LOCAL_CONCEPTS))
    hierarchy = "PARENT,CHILD\n" + "".join(
        f"C{parent},C{n}\n"
        for n in range(1, LOCAL_CONCEPTS)
        for parent in sorted(set(chosen.choices(range(n), k=chosen.randint(1, 3))))
    )
    return UploadFile("concepts.csv", data=concepts.encode()), UploadFile("hierarchy.csv", data=hierarchy.encode())


def test_the_real_icd10cm_file_async_then_a_second_version_by_the_cli(processes, node, uploader, reader):
    import simple_icd_10_cm

    node_workers(processes, node, "worker-1", "worker-2")
    content = FULL_FILE.read_bytes()
    response = uploader.post(
        "/fhir/CodeSystem/$upload-external-code-system", upload_body(content), HTTP_PREFER="respond-async"
    )
    assert response.status_code == 202, response.content
    job = wait_for_the_end(response["Content-Location"].rstrip("/").rsplit("/", 1)[-1], 300)
    assert job.status == JobStatus.COMPLETED, job.error_message

    assert lookup_display(reader, "E11.9") == "Type 2 diabetes mellitus without complications"
    assert (
        parameters_of(reader.get(f"/fhir/CodeSystem/$validate-code?system={ICD10CM}&code=S72.001A"))["result"][
            "valueBoolean"
        ]
        is True
    )
    assert (
        parameters_of(reader.get(f"/fhir/CodeSystem/$subsumes?system={ICD10CM}&codeA=E11&codeB=E11.9"))["outcome"][
            "valueCode"
        ]
        == "subsumes"
    )
    first = CodeSystemVersion.objects.get(system=ICD10CM)
    assert first.concept_count == 98_466
    for chapter in map(str, range(1, 23)):  # every chapter's codes, as the file's own code list has them
        below = set(
            Closure.objects.filter(code_system_version=first, ancestor=chapter).values_list("descendant", flat=True)
        ) - {chapter}
        assert below == set(simple_icd_10_cm.get_descendants(chapter)), chapter

    with transaction.atomic():
        save_resources(
            [
                Write(
                    {
                        "resourceType": "Condition",
                        "id": f"c{n}",
                        "subject": {"reference": "Patient/p"},
                        "code": {"coding": [{"system": ICD10CM, "code": code}]},
                    }
                )
                for n, code in enumerate(["E11", "E11.9", "E11.3211", "E10.9", "S72.001A"])
            ],
            authority=SERVER,
        )
    response = reader.get(f"/fhir/Condition?code:below={ICD10CM}|E11&_count=100")
    assert {entry["resource"]["id"] for entry in response.json()["entry"]} == {"c0", "c1", "c2"}

    # The second version is the slice of the same file, which declares the same version: what the second upload
    # proves (the CLI's upload, a version label of its own beside the current one, which keeps answering until
    # made current) does not depend on its size, and the whole file again took ~80 s.
    out = StringIO()
    call_command(
        "upload_terminology", ICD10CM, str(SLICE), "--dont-make-current", "--wait", stdout=out, stderr=StringIO()
    )
    assert "COMPLETED" in out.getvalue() and "2026-2" in out.getvalue()
    second = CodeSystemVersion.objects.get(system=ICD10CM, version="2026-2")
    assert (second.status, second.concept_count) == (VersionStatus.BUILDING, SLICE_CONCEPTS)
    first.refresh_from_db()
    assert first.status == VersionStatus.CURRENT  # lookups keep answering from the first until made current
    assert lookup_display(reader, "E11.9") == "Type 2 diabetes mellitus without complications"
    call_command("make_terminology_current", ICD10CM, "2026-2", stdout=StringIO())
    assert dict(CodeSystemVersion.objects.values_list("version", "status")) == {
        "2026": VersionStatus.SUPERSEDED,
        "2026-2": VersionStatus.CURRENT,
    }
    assert (
        parameters_of(reader.get(f"/fhir/CodeSystem/$lookup?system={ICD10CM}&code=E11.9"))["version"]["valueString"]
        == "2026-2"
    )


def test_workers_killed_mid_load_and_mid_closure_leave_every_concept_once_and_the_closure_exact(
    processes, node, settings
):
    settings.TERMINOLOGY_UPLOAD_CHUNK_CONCEPTS = 20  # 15 write transactions
    # Each step is one chunk: one worker at a time, so the one to be killed is the one that takes it.
    (doomed_writer,) = node_workers(processes, node, "doomed-writer")

    # With the table locked against inserts, a chunk of the step waits holding its chunk: it is killed so.
    with locked_by_another_transaction("LOCK TABLE terminology_closure IN SHARE MODE"):
        with locked_by_another_transaction("LOCK TABLE terminology_concept IN SHARE MODE"):
            job = start_upload(UploadRequest(LOCAL, local_code_system()), started_by="test")
            killed_writing = kill_while_it_holds(
                doomed_writer, chunks_held_by(doomed_writer, job.id, "load-concepts"), timeout=120
            )
            (doomed_closer,) = node_workers(processes, node, "doomed-closer")
        killed_closing = wait_until(
            lambda: _killed_while_holding(doomed_closer, chunks_held_by(doomed_closer, job.id, "build-closure")),
            180,
            while_waiting=run_maintenance_pass,
            message="the closer held no closure chunk",
        )
    node_workers(processes, node, "survivor")
    instance = wait_for_the_end(job.id, 300)

    assert instance.status == JobStatus.COMPLETED, instance.error_message
    for killed in (killed_writing, killed_closing):
        killed.refresh_from_db()
        assert killed.status == ChunkStatus.COMPLETED and killed.attempts >= 2, "the killed chunk was run again"
    version = CodeSystemVersion.objects.get(system=LOCAL)
    assert version.status == VersionStatus.CURRENT
    assert Concept.objects.filter(code_system_version=version).count() == LOCAL_CONCEPTS == version.concept_count
    assert stored_closure(version.id) == independent_closure(version.id)


def _killed_while_holding(worker: Process, holding) -> WorkChunk | None:
    """One try of `kill_while_it_holds`; the caller runs the maintenance pass between tries (the killed
    writer's chunk must be retried, by the closer, before the closure step opens)."""
    try:
        return kill_while_it_holds(worker, holding, timeout=1)
    except AssertionError:
        return None
