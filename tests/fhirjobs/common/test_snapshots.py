"""The rule beside every export: an expunging chunk (delete-expunge, `$expunge`) waits while a live snapshot
hold covers a type it removes, deletes nothing meanwhile, and goes on once the hold is released or has lapsed
(by the database clock); a hold being taken right now makes it wait too, never block. And the races: a kick-off
begun before a page committed, older transactions still open, a renewal at the moment of the expiry."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import TypeVar

import pytest
from django.db import connection, transaction

from batch.api import RetryChunkLater
from fhirjobs.deleteexpunge.steps import delete_expunge
from fhirjobs.expunge.steps import expunge
from fhirstore import snapshots
from fhirstore.exceptions import SnapshotUnsettled
from fhirstore.models import ExpungeMark, Resource, ResourceVersion, SnapshotHold
from fhirstore.snapshots import LOCK_SPACE, hold_snapshot, release_snapshot, renew_snapshot, snapshot_holds
from tests.fhirjobs.deleteexpunge.helpers import delete_expunge_parameters, keys_of, observation
from tests.fhirjobs.helpers import ChunkContext, patient
from tests.fhirstore.helpers import store
from tests.processes import locked_by_another_transaction

pytestmark = pytest.mark.django_db(transaction=True)
T = TypeVar("T")


def hold(*types: str) -> uuid.UUID:
    holder = uuid.uuid4()
    with transaction.atomic():
        hold_snapshot(holder, types)
    return holder


def lapse(holder: uuid.UUID) -> None:
    with connection.cursor() as cursor:  # the database's clock decides, as in production
        cursor.execute(
            "UPDATE fhirstore_snapshothold SET expires_at = now() - interval '1 second' WHERE holder = %s", [holder]
        )


def expire_in(holder: uuid.UUID, *, seconds: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE fhirstore_snapshothold SET expires_at = clock_timestamp() + make_interval(secs => %s)"
            " WHERE holder = %s",
            [seconds, holder],
        )


def observation_chunk() -> ChunkContext:
    return ChunkContext(
        {"type": "Observation", "keys": keys_of("Observation")}, delete_expunge_parameters("Observation")
    )


def test_a_delete_expunge_chunk_waits_while_an_export_holds_its_type_and_deletes_once_it_is_released():
    store(*(observation(f"o{n}") for n in range(3)))
    holder = hold("Observation", "Patient")
    chunk = observation_chunk()

    with pytest.raises(RetryChunkLater, match=f"export {holder} read Observation as of"):
        delete_expunge(chunk, sink=None)
    assert Resource.objects.filter(resource_type="Observation").count() == 3

    release_snapshot(holder)
    assert delete_expunge(chunk, sink=None) == 3
    assert not Resource.objects.filter(resource_type="Observation").exists()


def test_a_hold_over_other_types_does_not_stop_it():
    store(observation("o1"))
    hold("Patient")
    assert delete_expunge(observation_chunk(), sink=None) == 1


def test_a_cascade_into_a_held_type_rolls_the_whole_page_back():
    store(patient("p1"), observation("o1", "Patient/p1"))
    hold("Observation")
    chunk = ChunkContext(
        {"type": "Patient", "keys": keys_of("Patient")},
        delete_expunge_parameters("Patient", cascade=True),
    )
    with pytest.raises(RetryChunkLater, match="read Observation"):
        delete_expunge(chunk, sink=None)
    assert Resource.objects.count() == 2


def test_an_expunge_chunk_of_previous_versions_waits_too():
    store(patient("a"))
    store(patient("a", active=False))
    holder = hold("Patient")
    chunk = ChunkContext({"type": "Patient", "ids": ["a"]}, {"urls": ["Patient?"]})  # an EXPUNGE v1 page
    with pytest.raises(RetryChunkLater):
        expunge(chunk, sink=None)
    assert ResourceVersion.objects.count() == 1
    release_snapshot(holder)
    assert expunge(chunk, sink=None) == 1


def test_a_stale_hold_lapses_by_the_database_clock_and_its_holder_learns_it():
    store(observation("o1"))
    holder = hold("Observation")
    assert renew_snapshot(holder), "a live hold is renewed"
    lapse(holder)

    assert snapshot_holds(["Observation"]) == []
    assert delete_expunge(observation_chunk(), sink=None) == 1  # a dead reader blocks no one past its expiry
    assert not renew_snapshot(holder), "the reader learns its snapshot may have lost resources"
    assert renew_snapshot(uuid.uuid4()), "a reader that holds nothing has nothing to lose"


def test_a_hold_being_taken_makes_the_chunk_wait_instead_of_blocking():
    store(observation("o1"))
    with locked_by_another_transaction(f"SELECT pg_advisory_xact_lock({LOCK_SPACE}, hashtext('Observation'))"):
        with pytest.raises(RetryChunkLater, match="being kicked off"):
            delete_expunge(observation_chunk(), sink=None)
    assert not SnapshotHold.objects.exists()
    assert delete_expunge(observation_chunk(), sink=None) == 1


def in_a_thread(work: Callable[[], T]) -> Future[T]:
    """`work` in a connection of its own (a thread's), closed when it is done."""

    def run() -> T:
        try:
            return work()
        finally:
            connection.close()

    return ThreadPoolExecutor(max_workers=1).submit(run)


def clock() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


def test_a_kick_off_begun_before_an_expunge_committed_reads_the_store_as_of_after_it():
    """The kick-off's transaction began (its `now()`) before the page deleted; it takes the types' locks after."""
    store(observation("o1"))
    begun, expunged = threading.Event(), threading.Event()

    def kick_off() -> datetime:
        with transaction.atomic():
            Resource.objects.exists()  # the transaction has begun
            begun.set()
            expunged.wait(10)
            return hold_snapshot(uuid.uuid4(), ["Observation"])

    as_of = in_a_thread(kick_off)
    assert begun.wait(10)
    before_the_delete = clock()
    assert delete_expunge(observation_chunk(), sink=None) == 1
    expunged.set()
    assert as_of.result(10) > before_the_delete, "o1 existed as of an earlier instant: the export would miss it"


def test_no_hold_is_taken_as_of_an_instant_before_an_expunge_while_older_transactions_stay_open(monkeypatch):
    store(observation("o1"))
    monkeypatch.setattr(snapshots, "SETTLE_SECONDS", 0.2)
    with locked_by_another_transaction("SELECT 1"):  # began before the delete: the settled time stays before it
        assert delete_expunge(observation_chunk(), sink=None) == 1
        with pytest.raises(SnapshotUnsettled, match="retry in a moment"), transaction.atomic():
            hold_snapshot(uuid.uuid4(), ["Observation"])
        with transaction.atomic():
            assert hold_snapshot(uuid.uuid4(), ["Patient"]), "another type's expunges are no obstacle"
    with transaction.atomic():
        as_of = hold_snapshot(uuid.uuid4(), ["Observation"])
    assert as_of >= ExpungeMark.objects.get(resource_type="Observation").expunged_at


def test_a_renewal_under_way_when_a_page_looks_is_waited_for_and_keeps_the_page_off():
    store(observation("o1"))
    holder = hold("Observation")
    expire_in(holder, seconds=1.0)
    renewed = threading.Event()

    def renew_and_commit_late() -> bool:
        with transaction.atomic():
            live = renew_snapshot(holder)
            renewed.set()
            time.sleep(2.0)  # the page looks meanwhile, past the old expiry
        return live

    renewal = in_a_thread(renew_and_commit_late)
    assert renewed.wait(10)
    time.sleep(1.2)
    with pytest.raises(RetryChunkLater, match=f"export {holder}"):
        delete_expunge(observation_chunk(), sink=None)
    assert renewal.result(10), "renewed before it lapsed"
    assert Resource.objects.filter(resource_type="Observation").count() == 1


def test_a_renewal_begun_before_the_expiry_that_runs_after_a_page_deleted_finds_the_hold_lapsed():
    store(observation("o1"))
    holder = hold("Observation")
    expire_in(holder, seconds=1.0)
    begun, expunged = threading.Event(), threading.Event()

    def renew_late() -> bool:
        with transaction.atomic():
            Resource.objects.exists()  # the transaction has begun, before the expiry
            begun.set()
            expunged.wait(10)
            return renew_snapshot(holder)

    renewal = in_a_thread(renew_late)
    assert begun.wait(10)
    time.sleep(1.2)
    assert delete_expunge(observation_chunk(), sink=None) == 1
    expunged.set()
    assert not renewal.result(10), "o1 was deleted after the hold lapsed: the export must learn it"
