"""Patient merge as a service: in the request (small), as the MERGE job run in this process (`bus`), a
preview, by identifiers, deleting the source, a page run again, and the patients that cannot be merged."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from batch import control
from batch.control import JobStatus
from fhirjobs.merge.exceptions import MergeNotPossible, TooManyReferrers
from fhirjobs.merge.models import MergedChunk
from fhirjobs.merge.parameters import MergeRequest
from fhirjobs.merge.services import merge_patients
from fhirjobs.merge.steps import replace_references_step
from fhirstore.models import Resource
from fhirstore.referrers import referrer_keys
from fhirstore.storage import read_resource
from tests.fhirjobs.helpers import ChunkContext, patient
from tests.fhirjobs.merge.helpers import encounter, observation, output
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db  # in the test's transaction (rolled back): the job's test commits, as workers do


def merge(asynchronous: bool = False, **options) -> dict:
    options = {"source_id": "src", "target_id": "tgt", **options}
    answer = merge_patients(MergeRequest(**options), started_by="tester", asynchronous=asynchronous)
    assert answer.status == (202 if asynchronous else 200)
    return answer.body


def versions(resource_type: str) -> dict[str, int]:
    return dict(Resource.objects.filter(resource_type=resource_type).values_list("logical_id", "version_id"))


def test_a_small_merge_rewrites_every_reference_once_links_both_patients_and_records_a_provenance():
    store(
        patient("src", "A1"),
        patient("tgt", "B1"),
        observation("o1", "Patient/src"),
        observation("o2", "Patient/src/_history/1"),
        encounter("e1", "Patient/src"),
        observation("other", "Patient/tgt"),
    )

    answer = merge()

    assert versions("Observation") == {"o1": 2, "o2": 2, "other": 1}  # subject and performer: one new version
    assert versions("Encounter") == {"e1": 2}
    o1 = read_resource("Observation", "o1").body
    assert o1["subject"] == {"reference": "Patient/tgt"} and o1["performer"] == [{"reference": "Patient/tgt"}]
    assert [key for key in referrer_keys("Patient", "src") if key[0] != "Provenance"] == [
        ("Patient", "tgt")
    ]  # replaces
    source, target = read_resource("Patient", "src").body, read_resource("Patient", "tgt").body
    assert source["active"] is False
    assert source["link"] == [{"other": {"reference": "Patient/tgt"}, "type": "replaced-by"}]
    assert target["link"] == [{"other": {"reference": "Patient/src"}, "type": "replaces"}]
    assert target["identifier"] == [
        {"system": "urn:mrn", "value": "B1"},
        {"system": "urn:mrn", "value": "A1", "use": "old"},
    ]
    assert output(answer, "result") == target
    [provenance] = Resource.objects.filter(resource_type="Provenance").values_list("body", flat=True)
    assert provenance["activity"]["coding"][0]["code"] == "merge"
    assert provenance["agent"] == [{"who": {"display": "tester"}}]
    assert sorted(target["reference"] for target in provenance["target"]) == [
        "Encounter/e1/_history/2",
        "Observation/o1/_history/2",
        "Observation/o2/_history/2",
        "Patient/src/_history/2",
        "Patient/tgt/_history/2",
    ]


@pytest.mark.django_db(transaction=True)
def test_an_async_merge_of_50_referrers_runs_in_pages_and_completes_its_task(bus):
    store(patient("src"), patient("tgt"), *(observation(f"o{n:02}", "Patient/src") for n in range(50)))

    task = output(merge(asynchronous=True, batch_size=7), "task")

    assert read_resource("Task", task["id"]).body["status"] == "in-progress"
    assert versions("Observation") == {f"o{n:02}": 1 for n in range(50)}  # nothing before the job runs
    bus.drain()
    job = control.get_job(task["identifier"][0]["value"])
    assert job.status == JobStatus.COMPLETED, job.error_message
    assert [step.step_id for step in job.steps] == ["query-ids", "replace-references", "finish-merge"]
    assert job.step("replace-references").total == 8  # 50 ids in pages of 7
    assert versions("Observation") == {f"o{n:02}": 2 for n in range(50)}  # each rewritten once
    assert [key for key in referrer_keys("Patient", "src") if key[0] == "Observation"] == []
    provenance_id = job.report["provenance"]
    assert job.report == {
        "updated": {"Observation": 50},
        "total": 50,
        "provenance": provenance_id,
        "task": f"Task/{task['id']}",
        "target": "Patient/tgt",
    }
    done = read_resource("Task", task["id"]).body
    assert done["status"] == "completed"
    assert {item["type"]["text"]: item.get("valueReference", item.get("valueInteger")) for item in done["output"]} == {
        "result-patient": {"reference": "Patient/tgt/_history/2"},
        "provenance": {"reference": provenance_id},
        "resources-updated": 50,
    }
    provenance = read_resource(*provenance_id.split("/")).body
    assert len(provenance["target"]) == 52  # both patients and the 50 observations, each once
    assert read_resource("Patient", "src").body["link"][0]["type"] == "replaced-by"


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_merge_job_cancels_its_task_and_a_restart_resumes_it(bus):
    store(patient("src"), patient("tgt"), observation("o1", "Patient/src"))
    task = output(merge(asynchronous=True), "task")
    job_id = task["identifier"][0]["value"]

    control.cancel_job(job_id)

    cancelled = read_resource("Task", task["id"]).body
    assert cancelled["status"] == "cancelled"
    assert cancelled["statusReason"] == {"text": "Job instance cancelled at step query-ids"}
    assert cancelled["identifier"] == task["identifier"] and cancelled["input"] == task["input"]

    control.restart_job(job_id)
    assert read_resource("Task", task["id"]).body["status"] == "in-progress"
    bus.drain()
    assert read_resource("Task", task["id"]).body["status"] == "completed"


@pytest.mark.django_db(transaction=True)
def test_a_failed_merge_job_fails_its_task_and_a_restart_resumes_then_completes_it(bus, monkeypatch):
    store(patient("src"), patient("tgt"), observation("o1", "Patient/src"))
    task = output(merge(asynchronous=True), "task")
    job_id = task["identifier"][0]["value"]

    def broken(*args, **kwargs):
        raise RuntimeError("the store is broken")

    with monkeypatch.context() as patched:
        patched.setattr("fhirjobs.merge.steps.replace_references", broken)
        bus.drain()
    assert control.get_job(job_id).status == JobStatus.FAILED
    failed = read_resource("Task", task["id"]).body
    assert failed["status"] == "failed" and "the store is broken" in failed["statusReason"]["text"]
    assert versions("Observation") == {"o1": 1}

    control.restart_job(job_id)
    resumed = read_resource("Task", task["id"]).body
    assert resumed["status"] == "in-progress" and "statusReason" not in resumed  # the failure is taken back
    assert resumed["identifier"] == task["identifier"] and resumed["input"] == task["input"]
    bus.drain()
    assert control.get_job(job_id).status == JobStatus.COMPLETED
    assert read_resource("Task", task["id"]).body["status"] == "completed"
    assert versions("Observation") == {"o1": 2}


def test_a_preview_counts_and_writes_nothing():
    store(patient("src"), patient("tgt"), observation("o1", "Patient/src"), encounter("e1", "Patient/src"))
    before = list(Resource.objects.order_by("id").values_list("resource_type", "logical_id", "version_id"))

    answer = merge(preview=True)

    assert [issue["diagnostics"] for issue in output(answer, "outcome")["issue"]] == [
        "Preview only merge operation - no issues detected",
        "Merge would update 4 resources",
    ]
    assert output(answer, "result")["link"] == [{"other": {"reference": "Patient/src"}, "type": "replaces"}]
    assert list(Resource.objects.order_by("id").values_list("resource_type", "logical_id", "version_id")) == before


def test_patients_found_by_identifiers_and_the_source_deleted():
    store(
        patient("src", "A1", "A2"), patient("tgt", "B1"), patient("lookalike", "A1"), observation("o1", "Patient/src")
    )

    merge(
        source_id=None,
        source_identifiers=({"system": "urn:mrn", "value": "A1"}, {"system": "urn:mrn", "value": "A2"}),
        target_id=None,
        target_identifiers=({"system": "urn:mrn", "value": "B1"},),
        delete_source=True,
    )

    assert Resource.objects.get(resource_type="Patient", logical_id="src").deleted
    assert "link" not in read_resource("Patient", "tgt").body  # nothing to link to: the source is gone
    assert read_resource("Observation", "o1").body["subject"] == {"reference": "Patient/tgt"}
    [provenance] = Resource.objects.filter(resource_type="Provenance").values_list("body", flat=True)
    assert provenance["entity"] == [{"role": "removal", "what": {"reference": "Patient/src/_history/2"}}]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"source_id": "nobody"}, "source patient Patient/nobody does not exist"),
        ({"source_id": None, "source_identifiers": ({"system": "urn:mrn", "value": "A1"},)}, "match several"),
        ({"target_id": None, "target_identifiers": ({"value": "none"},)}, "match no patient"),
        ({"source_id": "merged"}, "Patient/merged was merged already"),
    ],
)
def test_patients_that_cannot_be_merged_are_refused_before_anything_is_written(options, message):
    store(
        patient("src", "A1"),
        patient("tgt", "A1"),
        observation("o1", "Patient/src"),
        {**patient("merged"), "link": [{"other": {"reference": "Patient/x"}, "type": "replaced-by"}]},
    )
    with pytest.raises(MergeNotPossible, match=message):
        merge(**options)
    assert versions("Observation") == {"o1": 1}


@override_settings(MERGE_SYNC_MAX_RESOURCES=2)
def test_more_referrers_than_the_synchronous_limit_need_respond_async():
    store(patient("src"), patient("tgt"), *(observation(f"o{n}", "Patient/src") for n in range(3)))
    with pytest.raises(TooManyReferrers, match="3 resources refer to the source patient, more than .* \\(2\\)"):
        merge()
    assert versions("Observation") == {"o0": 1, "o1": 1, "o2": 1}


MERGING = {"source_patient": "src", "target_patient": "tgt", "started_by": "tester"}  # as the step reads them


def test_a_page_run_again_writes_no_second_version():
    store(patient("src"), patient("tgt"), observation("o1", "Patient/src"), observation("o2", "Patient/src"))
    context = ChunkContext({"type": "Observation", "ids": ["o1", "o2"]}, MERGING)
    assert replace_references_step(context, sink=None) == 2
    assert replace_references_step(context, sink=None) == 2  # the record of the page: the same answer
    assert replace_references_step(ChunkContext(context.data, MERGING), sink=None) == 0  # another page: nothing left
    assert versions("Observation") == {"o1": 2, "o2": 2}
    assert MergedChunk.objects.get(chunk_id=context.chunk_id).versions == [
        "Observation/o1/_history/2",
        "Observation/o2/_history/2",
    ]


def test_the_command_merges_and_prints_the_outcome():
    store(patient("src"), patient("tgt"), observation("o1", "Patient/src"))
    printed = io.StringIO()
    call_command("merge_patients", "src", "tgt", stdout=printed)
    assert "1 resources referring to the source updated" in printed.getvalue()
    assert versions("Observation") == {"o1": 2}
    with pytest.raises(CommandError, match="does not exist"):
        call_command("merge_patients", "nobody", "tgt", stdout=io.StringIO())
