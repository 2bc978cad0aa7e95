"""An operator's hands on scheduled jobs: see them with their last run, pause, resume, run now exactly once."""

from datetime import timedelta

import pytest
from django.utils import timezone
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from scheduling import operations
from scheduling.exceptions import SchedulingError, UnknownJob
from scheduling.models import JobRun, RunOutcome
from scheduling.registry import ScheduledJob
from scheduling.runs import Occurrence, run_occurrence
from scheduling.schedules import EverySeconds
from scheduling.sync import sync_declared_jobs

pytestmark = pytest.mark.django_db


def noop() -> None:
    pass


@pytest.fixture
def declared():
    sync_declared_jobs(
        [
            ScheduledJob("app.jobs.tidy", noop, EverySeconds(60), clustered=True, transactional=False),
            ScheduledJob("app.jobs.cache", noop, EverySeconds(5), clustered=False, transactional=False),
        ]
    )


def test_rows_carry_their_last_run_and_next_tick(declared):
    started = timezone.now() - timedelta(minutes=2)
    for minutes_ago, outcome in ((2, RunOutcome.SUCCEEDED), (1, RunOutcome.FAILED)):
        JobRun.objects.create(
            job_name="app.jobs.tidy",
            tick=timezone.now() - timedelta(minutes=minutes_ago),
            node="n",
            process="h:1",
            started_at=started,
            finished_at=started + timedelta(seconds=3),
            outcome=outcome,
        )

    rows = {row.name: row for row in operations.scheduled_job_rows()}

    tidy = operations.last_run(rows["app.jobs.tidy"])
    assert tidy.outcome == RunOutcome.FAILED and tidy.duration_seconds == 3
    assert operations.last_run(rows["app.jobs.cache"]) is None
    now = timezone.now()
    assert now < operations.next_run(rows["app.jobs.tidy"], now) <= now + timedelta(seconds=60)


def test_pausing_and_resuming_flip_the_flag_every_scheduler_reads_and_move_the_change_marker(declared):
    before = PeriodicTasks.last_change()

    assert operations.set_paused(["app.jobs.tidy", "app.jobs.cache"], paused=True) == 2
    assert operations.set_paused(["app.jobs.tidy"], paused=True) == 0, "already paused"

    assert not PeriodicTask.objects.get(name="app.jobs.tidy").enabled
    assert PeriodicTasks.last_change() != before
    assert operations.next_run(operations.scheduled_job_rows().get(name="app.jobs.tidy"), timezone.now()) is None
    assert operations.set_paused(["app.jobs.tidy"], paused=False) == 1
    assert PeriodicTask.objects.get(name="app.jobs.tidy").enabled


def test_run_now_is_for_clustered_jobs_only(declared):
    with pytest.raises(SchedulingError, match="local job"):
        operations.run_now("app.jobs.cache")
    with pytest.raises(UnknownJob):
        operations.run_now("app.jobs.nothing")


def test_run_now_sends_the_job_with_the_moment_of_the_click_as_its_tick(
    declared, settings, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(
        "scheduling.operations.run_clustered_job_now.apply_async", lambda kwargs, queue: sent.append((kwargs, queue))
    )

    with django_capture_on_commit_callbacks(execute=True):
        tick = operations.run_now("app.jobs.tidy")

    assert sent == [({"job": "app.jobs.tidy", "tick": tick.isoformat()}, settings.SCHEDULER_QUEUE)]


def test_a_run_now_runs_off_schedule_even_when_paused_and_exactly_once_however_often_delivered():
    calls = []
    job = ScheduledJob("app.jobs.tidy", lambda: calls.append(1), EverySeconds(60), clustered=True, transactional=False)
    click = timezone.now() - timedelta(minutes=5)  # off the schedule, and long stale for a scheduled tick

    outcomes = [
        run_occurrence(job.name, None, click, resolve=lambda name: job, is_enabled=lambda name: False, on_demand=True)
        for _ in range(2)
    ]

    assert outcomes == [Occurrence.SUCCEEDED, Occurrence.TAKEN]
    assert calls == [1]
    assert JobRun.objects.get().tick == click


def _run(name: str, tick, outcome: RunOutcome) -> JobRun:
    return JobRun.objects.create(
        job_name=name,
        tick=tick,
        node="n",
        process="h:1",
        started_at=tick,
        finished_at=tick + timedelta(seconds=2),
        outcome=outcome,
    )


def test_the_tick_history_shows_every_tick_of_the_schedule_and_the_ticks_that_left_no_run(declared):
    row = PeriodicTask.objects.get(name="app.jobs.tidy")
    now = timezone.now()
    latest = EverySeconds(60).latest_tick_at_or_before(now)
    _run("app.jobs.tidy", latest, RunOutcome.SUCCEEDED)
    _run("app.jobs.tidy", latest - timedelta(minutes=1), RunOutcome.SKIPPED)
    clicked = latest - timedelta(seconds=90)  # a run-now, off the schedule
    _run("app.jobs.tidy", clicked, RunOutcome.FAILED)

    history = operations.tick_history(row, now, limit=4)

    assert [(entry.tick, entry.outcome, entry.on_schedule) for entry in history] == [
        (latest, RunOutcome.SUCCEEDED, True),
        (latest - timedelta(minutes=1), RunOutcome.SKIPPED, True),
        (clicked, RunOutcome.FAILED, False),
        (latest - timedelta(minutes=2), operations.NOT_RUN, True),
        (latest - timedelta(minutes=3), operations.NOT_RUN, True),
    ]
    assert history[0].duration_seconds == 2 and history[3].duration_seconds is None


def test_recent_runs_of_one_job_or_only_the_problems():
    now = timezone.now()
    for seconds in range(10):  # a chatty job every 5 s, all fine
        _run("batch.maintenance", now - timedelta(seconds=5 * seconds), RunOutcome.SUCCEEDED)
    _run("app.jobs.tidy", now - timedelta(minutes=1), RunOutcome.FAILED)
    _run("app.jobs.tidy", now - timedelta(minutes=2), RunOutcome.SUCCEEDED)

    assert [run.outcome for run in operations.recent_runs(job_name="app.jobs.tidy")] == ["failed", "succeeded"]
    assert [run.job_name for run in operations.recent_runs(problems_only=True)] == ["app.jobs.tidy"]
    assert len(operations.recent_runs(limit=5)) == 5
    assert operations.recorded_job_names() == ["app.jobs.tidy", "batch.maintenance"]
