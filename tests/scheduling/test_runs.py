"""One occurrence of a clustered job runs on exactly one process, never overlaps itself, and is recorded."""

import threading
from datetime import datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from scheduling import runs
from scheduling.models import JobRun, RunOutcome
from scheduling.registry import ScheduledJob
from scheduling.runs import Occurrence, run_occurrence
from scheduling.schedules import EverySeconds

EVERY_MINUTE = EverySeconds(60)


def current_tick() -> datetime:
    """A tick that cannot go stale while the test runs: the next minute's (a tick is stale once the one after
    it has come, so a tick taken as "this minute's" would turn MISSED if the test crossed a minute boundary)."""
    return EVERY_MINUTE.next_tick_after(timezone.now())


class CountingJob:
    def __init__(self, body=lambda: None, transactional=False, name="app.jobs.count"):
        self.calls = 0
        self.body = body
        self.job = ScheduledJob(name, self, EVERY_MINUTE, clustered=True, transactional=transactional)

    def __call__(self) -> None:
        self.calls += 1
        self.body()

    def run(self, tick: datetime, enabled: bool = True) -> Occurrence:
        return run_occurrence(
            self.job.name, EVERY_MINUTE, tick, resolve=lambda name: self.job, is_enabled=lambda name: enabled
        )


@pytest.mark.django_db
def test_the_first_message_for_a_tick_runs_it_and_a_duplicate_finds_it_taken():
    counting, tick = CountingJob(), current_tick()

    assert counting.run(tick) == Occurrence.SUCCEEDED
    assert counting.run(tick) == Occurrence.TAKEN

    assert counting.calls == 1
    run = JobRun.objects.get()
    assert (run.job_name, run.tick, run.outcome, run.error) == ("app.jobs.count", tick, RunOutcome.SUCCEEDED, "")
    assert run.node and run.process.endswith(f":{__import__('os').getpid()}")
    assert run.started_at <= run.finished_at


@pytest.mark.django_db(transaction=True)
def test_many_processes_racing_for_one_tick_run_it_once():
    counting, tick = CountingJob(), current_tick()
    start = threading.Barrier(6)
    outcomes = []

    def contender() -> None:
        start.wait()
        try:
            outcomes.append(counting.run(tick))
        finally:
            connection.close()

    threads = [threading.Thread(target=contender) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == sorted([Occurrence.SUCCEEDED] + [Occurrence.TAKEN] * 5)
    assert counting.calls == 1


@pytest.mark.django_db(transaction=True)
def test_a_run_still_going_at_the_next_tick_makes_that_tick_skipped():
    release, started = threading.Event(), threading.Event()
    counting = CountingJob(body=lambda: (started.set(), release.wait(120)))
    first = current_tick()
    outcome_of_first = []

    def long_run() -> None:
        try:
            outcome_of_first.append(counting.run(first))
        finally:
            connection.close()

    runner = threading.Thread(target=long_run)
    runner.start()
    assert started.wait(120)

    second = first + timedelta(minutes=1)
    assert counting.run(second) == Occurrence.SKIPPED
    release.set()
    runner.join()
    third = first + timedelta(minutes=2)
    assert counting.run(third) == Occurrence.SUCCEEDED

    assert outcome_of_first == [Occurrence.SUCCEEDED]
    assert counting.calls == 2
    assert dict(JobRun.objects.values_list("tick", "outcome")) == {
        first: RunOutcome.SUCCEEDED,
        second: RunOutcome.SKIPPED,
        third: RunOutcome.SUCCEEDED,
    }


@pytest.mark.django_db
def test_a_message_arriving_after_the_next_tick_is_recorded_missed_and_not_run():
    counting = CountingJob()
    stale = current_tick() - timedelta(minutes=2)  # the tick after it (last minute's) has come

    assert counting.run(stale) == Occurrence.MISSED

    assert counting.calls == 0
    assert JobRun.objects.get().outcome == RunOutcome.MISSED


@pytest.mark.django_db
def test_a_paused_job_is_not_run_nor_recorded():
    counting = CountingJob()

    assert counting.run(current_tick(), enabled=False) == Occurrence.NOT_SCHEDULED

    assert counting.calls == 0
    assert not JobRun.objects.exists()


@pytest.mark.django_db
def test_a_failure_is_recorded_with_its_traceback():
    def broken() -> None:
        raise RuntimeError("disk full")

    assert CountingJob(body=broken).run(current_tick()) == Occurrence.FAILED

    run = JobRun.objects.get()
    assert run.outcome == RunOutcome.FAILED
    assert "RuntimeError: disk full" in run.error
    assert run.finished_at is not None


@pytest.mark.django_db
def test_a_job_no_process_declares_fails_with_a_reason():
    outcome = run_occurrence(
        "gone.job", EVERY_MINUTE, current_tick(), resolve=lambda name: None, is_enabled=lambda name: True
    )

    assert outcome == Occurrence.FAILED
    assert "gone.job is not declared" in JobRun.objects.get().error


@pytest.mark.django_db
@pytest.mark.parametrize("transactional, user_kept", [(True, False), (False, True)])
def test_a_transactional_job_leaves_nothing_behind_when_it_fails(transactional, user_kept):
    def half_done() -> None:
        get_user_model().objects.create(username="half-written")
        raise ValueError("second step failed")

    CountingJob(body=half_done, transactional=transactional).run(current_tick())

    assert get_user_model().objects.filter(username="half-written").exists() is user_kept
    assert JobRun.objects.get().outcome == RunOutcome.FAILED


@pytest.mark.django_db(transaction=True)
def test_a_long_run_keeps_heartbeating(monkeypatch):
    monkeypatch.setattr(runs, "HEARTBEAT_SECONDS", 0.05)

    CountingJob(body=lambda: threading.Event().wait(0.4)).run(current_tick())

    run = JobRun.objects.get()
    assert run.heartbeat_at > run.started_at + timedelta(seconds=0.04)


@pytest.mark.django_db
def test_a_run_whose_process_died_is_abandoned_and_frees_the_job():
    dead_tick = current_tick() - timedelta(minutes=5)
    JobRun.objects.create(
        job_name="app.jobs.count",
        tick=dead_tick,
        node="n1",
        process="gone:1",
        started_at=timezone.now() - timedelta(minutes=5),
        heartbeat_at=timezone.now() - runs.ABANDONED_AFTER - timedelta(seconds=1),
        outcome=RunOutcome.RUNNING,
    )

    assert CountingJob().run(current_tick()) == Occurrence.SUCCEEDED
    assert JobRun.objects.get(tick=dead_tick).outcome == RunOutcome.ABANDONED


@pytest.mark.django_db
def test_only_a_running_run_can_finish_and_only_once():
    """The outcome state machine, walked: running → succeeded|failed|abandoned, and nothing after that."""
    tick = current_tick()
    for target in TARGETS:
        run = JobRun.objects.create(
            job_name=f"walk.{target}",
            tick=tick,
            node="n",
            process="p:1",
            started_at=timezone.now(),
            outcome=RunOutcome.RUNNING,
        )
        assert runs._finish(run.id, target, "") is True
        for later in TARGETS:
            assert runs._finish(run.id, later, "") is False
    for initial in (RunOutcome.SKIPPED, RunOutcome.MISSED):
        run = JobRun.objects.create(
            job_name=f"walk.{initial}", tick=tick, node="n", process="p:1", started_at=timezone.now(), outcome=initial
        )
        assert not any(runs._finish(run.id, target, "") for target in TARGETS)


TARGETS = (RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.ABANDONED)


@pytest.mark.django_db
def test_pruning_deletes_finished_runs_past_retention_only():
    old, recent = timezone.now() - timedelta(days=8), timezone.now() - timedelta(days=1)
    for index, (started, outcome) in enumerate(
        [
            (old, RunOutcome.SUCCEEDED),
            (old, RunOutcome.SKIPPED),
            (old, RunOutcome.RUNNING),
            (recent, RunOutcome.FAILED),
        ]
    ):
        JobRun.objects.create(
            job_name=f"j{index}", tick=started, node="n", process="p:1", started_at=started, outcome=outcome
        )

    assert runs.prune_runs(timedelta(days=7)) == 2
    assert sorted(JobRun.objects.values_list("outcome", flat=True)) == [RunOutcome.FAILED, RunOutcome.RUNNING]


@pytest.mark.django_db
@pytest.mark.parametrize("skew", [45, -45])
def test_on_a_host_whose_clock_is_off_a_due_tick_runs_and_a_healthy_run_is_not_abandoned(skew, monkeypatch):
    """Staleness and heartbeats are judged on the database's clock: the host's says nothing."""
    every_five = EverySeconds(5)
    due = every_five.latest_tick_at_or_before(timezone.now())  # the tick beat sends now (by the database's clock)
    healthy = JobRun.objects.create(
        job_name="app.jobs.other",
        tick=due,
        node="n1",
        process="alive:1",
        started_at=timezone.now(),
        heartbeat_at=timezone.now(),
        outcome=RunOutcome.RUNNING,
    )
    host_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: host_now() + timedelta(seconds=skew))
    counting = CountingJob()

    occurrence = run_occurrence(
        counting.job.name, every_five, due, resolve=lambda name: counting.job, is_enabled=lambda name: True
    )

    assert (occurrence, counting.calls) == (Occurrence.SUCCEEDED, 1)
    assert runs.abandon_silent_runs() == 0
    assert JobRun.objects.get(pk=healthy.pk).outcome == RunOutcome.RUNNING
