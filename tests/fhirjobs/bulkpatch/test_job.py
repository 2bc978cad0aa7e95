"""The BULK_PATCH job run in this process (`bus`): every match patched once however many pages and urls, a
dry run; its patch step alone: a page run again, a resource the patch or the write fails on failing alone."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from batch import control
from batch.control import JobStatus
from fhirjobs.bulkpatch import steps
from fhirjobs.bulkpatch.models import PatchedChunk, PatchedResource
from fhirjobs.bulkpatch.services import start_bulk_patch
from fhirjobs.bulkpatch.steps import patch
from fhirstore.exceptions import PreconditionFailed
from fhirstore.models import Resource
from fhirstore.storage import read_resource
from tests.fhirjobs.bulkpatch.helpers import observation, replace
from tests.fhirjobs.helpers import ChunkContext
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db(transaction=True)  # the job's commits announce its chunks to the bus

AMEND = replace("Observation.status", valueCode="amended")
AMENDING = {"patch": AMEND, "dry_run": False}  # the job's parameters, as its patch step reads them


def run(bus, urls, patch_parameters=AMEND, **options) -> control.JobSnapshot:
    job = start_bulk_patch({"urls": urls, "patch": patch_parameters, **options}, started_by="test")
    bus.drain()
    return control.get_job(job.id)


def versions(**filters) -> dict[str, int]:
    return dict(Resource.objects.filter(**filters).values_list("logical_id", "version_id"))


def test_every_match_is_patched_once_over_many_pages_and_urls(bus):
    store(
        *(observation(f"o{n:02}") for n in range(25)),
        observation("other", code="2339-0"),
        observation("amended", status="amended"),
    )

    # Both urls match o00…o24: each is patched once, by whichever page comes first; "amended" (the code matches)
    # is left as it was, with no new version.
    job = run(bus, ["Observation?code=8867-4", "Observation?status=final"], batch_size=4)

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert [step.step_id for step in job.steps] == ["generate-ranges", "load-ids", "patch", "report"]
    assert versions(resource_type="Observation") == {**{f"o{n:02}": 2 for n in range(25)}, "other": 2, "amended": 1}
    assert read_resource("Observation", "o00").body["status"] == "amended"
    assert job.report == {
        "dry_run": False,
        "patched": {"Observation": 26},
        "total": 26,
        "unchanged": 1,
        "failed_count": 0,
        "failed": {},
        "diffs": [],
    }
    assert PatchedResource.objects.filter(job_instance_id=job.id).count() == 26


def test_a_dry_run_writes_nothing_and_reports_the_first_diffs(bus):
    store(*(observation(f"o{n:02}") for n in range(12)), observation("done", status="amended"))

    job = run(bus, ["Observation?"], dry_run=True, batch_size=5)

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert set(versions(resource_type="Observation").values()) == {1}
    assert job.report["total"] == 12 and job.report["unchanged"] == 1  # "done" is amended already
    assert len(job.report["diffs"]) == 10
    assert job.report["diffs"][0] == {
        "resource": "Observation/o00",
        "element": "status",
        "before": "final",
        "after": "amended",
    }


@pytest.mark.django_db
def test_a_page_run_again_patches_nothing_twice():
    store(observation("o1"), observation("o2"))
    context = ChunkContext({"type": "Observation", "ids": ["o1", "o2"]}, AMENDING)
    assert patch(context, sink=None) == 2
    store(observation("o1"))  # final again meanwhile (version 3): the job patched it already
    assert patch(context, sink=None) == 2  # the page's record: the same answer
    assert patch(ChunkContext(context.data, AMENDING, context.instance_id), sink=None) == 0  # another page
    assert versions(resource_type="Observation") == {"o1": 3, "o2": 2}


@pytest.mark.django_db
def test_a_resource_the_patch_fails_on_fails_alone_named_by_id():
    store(observation("o1", valueString="x"), observation("o2"), observation("o3", valueString="z"))
    context = ChunkContext(
        {"type": "Observation", "ids": ["o1", "o2", "o3"]},
        {"patch": replace("Observation.value", valueString="y"), "dry_run": False},
    )
    assert patch(context, sink=None) == 2
    assert versions(resource_type="Observation") == {"o1": 2, "o2": 1, "o3": 2}
    failed = PatchedChunk.objects.get(chunk_id=context.chunk_id).failed
    assert list(failed) == ["o2"] and "matches 0 elements" in failed["o2"]


@pytest.mark.django_db
def test_a_page_whose_write_fails_is_written_resource_by_resource(monkeypatch):
    store(observation("o1"), observation("bad"), observation("o3"))
    save = steps.save_resources

    def refusing_bad(writes, **options):
        if any(write.resource["id"] == "bad" for write in writes):
            raise PreconditionFailed("Observation/bad was changed meanwhile")
        return save(writes, **options)

    monkeypatch.setattr(steps, "save_resources", refusing_bad)
    context = ChunkContext({"type": "Observation", "ids": ["bad", "o1", "o3"]}, AMENDING)
    assert patch(context, sink=None) == 2
    assert PatchedChunk.objects.get(chunk_id=context.chunk_id).failed == {
        "bad": "Observation/bad was changed meanwhile"
    }
    assert versions(resource_type="Observation") == {"o1": 2, "bad": 1, "o3": 2}


@pytest.mark.django_db
def test_the_command_starts_a_job_with_the_patch_file(tmp_path):
    patch_file = tmp_path / "amend.json"
    patch_file.write_text(json.dumps(AMEND))
    printed = io.StringIO()
    call_command("bulk_patch", str(patch_file), "Observation", "--dry-run", stdout=printed)
    job = control.get_job(printed.getvalue().strip())
    assert job.parameters["urls"] == ["Observation?"] and job.parameters["dry_run"] is True
    with pytest.raises(CommandError, match="patch: the patch has no operation"):
        patch_file.write_text('{"resourceType": "Parameters"}')
        call_command("bulk_patch", str(patch_file), "Observation?", stdout=io.StringIO())
