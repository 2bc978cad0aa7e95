"""The DELETE_EXPUNGE job run in this process (`bus`): what it deletes, what it leaves, its report, the
referential integrity check, a chunk run again, and the plans of its statements."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from batch import control
from batch.control import JobStatus
from fhirjobs.deleteexpunge.models import ExpungedChunk
from fhirjobs.deleteexpunge.parameters import DeleteExpungeRequest
from fhirjobs.deleteexpunge.services import start_delete_expunge
from fhirjobs.deleteexpunge.steps import delete_expunge
from fhirstore.exceptions import ResourceReferenced
from fhirstore.expunge import expunge_resources, referrals_into
from fhirstore.loading import BulkLoader
from fhirstore.models import Resource
from fhirstore.synthetic import generate_resources
from tests.fhirjobs.deleteexpunge.helpers import delete_expunge_parameters, keys_of, no_rows, observation, rows_of
from tests.fhirjobs.helpers import ChunkContext, patient
from tests.fhirstore.helpers import store

pytestmark = pytest.mark.django_db(transaction=True)


def run(urls, bus, **options) -> control.JobSnapshot:
    job = start_delete_expunge(DeleteExpungeRequest(tuple(urls), **options), started_by="test")
    bus.drain()
    return control.get_job(job.id)


def test_deletes_the_matches_with_every_version_and_index_row_and_counts_them(bus):
    store(*(patient(f"gone{n}", active=False) for n in range(5)), patient("kept1"), patient("kept2"))
    store(*({**patient(f"gone{n}", active=False), "gender": "male"} for n in range(3)))  # second versions
    kept = rows_of("Patient", ["kept1", "kept2"])
    assert rows_of("Patient", [f"gone{n}" for n in range(5)])["version"] == 3

    job = run(["Patient?active=false"], bus)

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert [step.step_id for step in job.steps] == ["generate-ranges", "load-ids", "delete-expunge", "report"]
    assert job.report == {"deleted": {"Patient": 5}, "total": 5}
    assert rows_of("Patient", [f"gone{n}" for n in range(5)]) == no_rows()
    assert rows_of("Patient", ["kept1", "kept2"]) == kept


def test_every_resource_sharing_one_last_updated_goes_over_many_pages(bus):
    """HAPI #5150: its walk paged by time and stopped after the first page of rows sharing a timestamp."""
    one_instant = datetime(2024, 1, 1, tzinfo=UTC)
    store(*(observation(f"o{n:03}") for n in range(45)), at=one_instant)
    store(observation("other", code="2339-0"), at=one_instant)

    job = run(["Observation?code=8867-4"], bus, batch_size=4)

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.step("delete-expunge").total == 12  # pages of 4 of 45 ids sharing one lastUpdated
    assert job.report == {"deleted": {"Observation": 45}, "total": 45}
    assert list(Resource.objects.values_list("logical_id", flat=True)) == ["other"]


def test_a_referenced_resource_is_refused_naming_its_referrers_unless_cascade(bus):
    store(patient("p1", active=False), patient("p2", active=False), observation("o1", "Patient/p1"))

    with pytest.raises(ResourceReferenced) as refused:
        start_delete_expunge(DeleteExpungeRequest(("Patient?active=false",)), started_by="test")
    assert "Observation/o1 refers to Patient/p1 (subject)" in refused.value.message
    assert refused.value.referrers == ["Observation/o1"]
    assert Resource.objects.count() == 3

    job = run(["Patient?active=false"], bus, cascade=True)

    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.report == {"deleted": {"Observation": 1, "Patient": 2}, "total": 3}
    assert rows_of("Observation") == rows_of("Patient") == no_rows()


def test_referrers_the_urls_also_delete_are_no_obstacle(bus):
    store(patient("p1"), observation("o1", "Patient/p1"), observation("o2", "Patient/p1"))
    job = run(["Patient?", "Observation?"], bus, batch_size=1)
    assert job.status == JobStatus.COMPLETED, job.error_message
    assert job.report == {"deleted": {"Observation": 2, "Patient": 1}, "total": 3}


def test_a_referrer_written_after_the_kick_off_fails_the_job_and_deletes_nothing_of_its_page(bus):
    store(patient("p1", active=False))
    job = start_delete_expunge(DeleteExpungeRequest(("Patient?active=false",)), started_by="test")
    store(observation("late", "Patient/p1"))
    bus.drain()
    job = control.get_job(job.id)
    assert job.status == JobStatus.FAILED
    assert "Observation/late refers to Patient/p1" in job.error_message
    assert rows_of("Patient")["resource"] == 1


def test_a_cascade_deeper_than_its_rounds_is_refused():
    store(
        patient("p1"),
        observation("o1", "Patient/p1"),
        {
            "resourceType": "DiagnosticReport",
            "id": "dr",
            "status": "final",
            "code": {"text": "panel"},
            "result": [{"reference": "Observation/o1"}],
        },
    )  # two levels of referrers above the patient
    with pytest.raises(ResourceReferenced, match="after 1 cascade rounds"), transaction.atomic():
        expunge_resources(keys_of("Patient"), cascade_rounds=1)
    with transaction.atomic():
        assert expunge_resources(keys_of("Patient"), cascade_rounds=2) == {
            "Patient": 1,
            "Observation": 1,
            "DiagnosticReport": 1,
        }


def test_a_chunk_run_again_deletes_nothing_and_counts_the_same():
    store(patient("a"), patient("b"), patient("c"))
    context = ChunkContext({"type": "Patient", "keys": keys_of("Patient")[:2]}, delete_expunge_parameters("Patient"))
    assert delete_expunge(context, sink=None) == 2
    store(patient("a"))  # created again meanwhile: a chunk run again must not delete it
    assert delete_expunge(context, sink=None) == 2
    assert sorted(Resource.objects.values_list("logical_id", flat=True)) == ["a", "c"]
    assert ExpungedChunk.objects.get().counts == {"Patient": 2}


def test_the_deletes_are_index_scans_by_an_array_of_ids():
    with BulkLoader() as loader:
        for resource in generate_resources(patients=15, seed=7):
            loader.add(resource, "generated", None)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    keys = keys_of("Observation")[:20]
    assert len(keys) == 20 and Resource.objects.count() > 1000
    with transaction.atomic(), CaptureQueriesContext(connection) as captured:
        assert referrals_into(keys) == []  # the page's check, by the reference index, per resource
        assert sum(expunge_resources(keys).values()) == len(keys)
        statements = [
            query["sql"] for query in captured.captured_queries if query["sql"].startswith(("DELETE", "SELECT", "WITH"))
        ]
        with connection.cursor() as cursor:
            plans = {}
            for statement in statements:
                cursor.execute(f"EXPLAIN {statement}")
                plans[statement[:60]] = "\n".join(line for (line,) in cursor.fetchall())
    deletes = [statement for statement in statements if "DELETE" in statement]
    assert (
        len(deletes) == 1 and deletes[0].count("DELETE FROM") == 8
    )  # one round trip: six index tables, versions, rows
    assert all(" IN (" not in statement for statement in statements)  # ids travel as one array parameter
    scanned = set(re.findall(r"Seq Scan on (\w+)", "\n".join(plans.values())))
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, relpages FROM pg_class WHERE relname = ANY(%s)", [sorted(scanned)])
        pages = dict(cursor.fetchall())
    # Only a table of a page or two is read whole (the planner's right choice there: string rows are few here).
    assert all(pages[table] <= 2 for table in scanned), (pages, plans)
    assert {"fhirstore_tokenindex", "fhirstore_referenceindex", "fhirstore_dateindex", "fhirstore_resource"}.isdisjoint(
        scanned
    ), plans
