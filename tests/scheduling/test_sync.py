"""Declared jobs become PeriodicTask rows: created and updated with the code by every starting process, disabled
when gone only by the explicit retiring step of an upgrade; pauses stay."""

import json

import pytest
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from scheduling.registry import ScheduledJob
from scheduling.schedules import CronSchedule, EverySeconds
from scheduling.sync import CLUSTERED_TASK, LOCAL_TASK, REMOVED_FROM_CODE, retire_undeclared_jobs, sync_declared_jobs

pytestmark = pytest.mark.django_db


def noop() -> None:
    pass


def job(name="app.jobs.cleanup", schedule=EverySeconds(60), clustered=True) -> ScheduledJob:
    return ScheduledJob(name, noop, schedule, clustered, transactional=False)


def row(name="app.jobs.cleanup") -> PeriodicTask:
    return PeriodicTask.objects.get(name=name)


def test_a_clustered_job_gets_an_enabled_row_that_beat_sends():
    report = sync_declared_jobs([job()])

    created = row()
    assert report.created == ["app.jobs.cleanup"]
    assert created.enabled
    assert created.task == CLUSTERED_TASK
    assert created.queue is None  # each beat sends to its own SCHEDULER_QUEUE
    assert json.loads(created.kwargs) == {"job": "app.jobs.cleanup", "schedule": {"every_seconds": 60}}
    assert (created.interval.every, created.interval.period) == (60, "seconds")


def test_a_local_job_row_is_never_queued():
    sync_declared_jobs([job(clustered=False)])

    assert (row().task, row().queue) == (LOCAL_TASK, None)


def test_whole_minute_crons_show_as_crontabs_and_second_crons_as_one_second_intervals():
    sync_declared_jobs(
        [
            job("a.nightly", CronSchedule("0 0 1 * * ?", "Europe/Berlin")),
            job("a.fast", CronSchedule("*/2 * * * * ?", "UTC")),
            job("a.last_day", CronSchedule("0 0 1 L * ?", "UTC")),
        ]
    )

    nightly = row("a.nightly").crontab
    assert (nightly.minute, nightly.hour, nightly.day_of_month, str(nightly.timezone)) == (
        "0",
        "1",
        "*",
        "Europe/Berlin",
    )
    assert row("a.fast").interval.every == 1
    assert row("a.last_day").interval.every == 1  # celery's crontab cannot show L; the kwargs hold the truth
    assert json.loads(row("a.last_day").kwargs)["schedule"] == {"cron": "0 0 1 L * ?", "timezone": "UTC"}


def test_a_schedule_changed_in_code_updates_the_row_and_moves_the_change_marker():
    sync_declared_jobs([job(schedule=EverySeconds(60))])
    before = PeriodicTasks.last_change()

    report = sync_declared_jobs([job(schedule=EverySeconds(30))])

    assert report.updated == ["app.jobs.cleanup"]
    assert json.loads(row().kwargs)["schedule"] == {"every_seconds": 30}
    assert PeriodicTasks.last_change() > before


def test_an_unchanged_declaration_writes_nothing():
    sync_declared_jobs([job()])
    before = PeriodicTasks.last_change()

    report = sync_declared_jobs([job()])

    assert (report.created, report.updated, report.disabled) == ([], [], [])
    assert PeriodicTasks.last_change() == before


def test_a_process_of_the_previous_release_disables_none_of_the_jobs_the_new_release_added():
    sync_declared_jobs([job(), job("app.jobs.new_in_this_release")])

    assert sync_declared_jobs([job()]).disabled == []  # an old beat starting mid-upgrade
    assert row("app.jobs.new_in_this_release").enabled


def test_a_job_removed_from_code_is_disabled_by_the_retiring_step_and_comes_back_when_declared_again():
    sync_declared_jobs([job(), job("app.jobs.kept")])

    retired = retire_undeclared_jobs([job("app.jobs.kept")]).disabled  # (and the project's own jobs, not declared here)
    assert "app.jobs.cleanup" in retired and "app.jobs.kept" not in retired
    assert not row().enabled and row("app.jobs.kept").enabled
    assert row().description == REMOVED_FROM_CODE
    assert retire_undeclared_jobs([job("app.jobs.kept")]).disabled == [], "once"

    sync_declared_jobs([job()])
    assert row().enabled


def test_the_retiring_step_never_touches_an_operators_pause_of_a_declared_job():
    sync_declared_jobs([job()])
    PeriodicTask.objects.filter(name="app.jobs.cleanup").update(enabled=False)

    assert "app.jobs.cleanup" not in retire_undeclared_jobs([job()]).disabled
    assert row().description != REMOVED_FROM_CODE


def test_a_pause_in_the_admin_survives_a_sync_and_a_code_change():
    sync_declared_jobs([job()])
    paused = row()
    paused.enabled = False
    paused.save()

    sync_declared_jobs([job(schedule=EverySeconds(5))])

    assert not row().enabled
    assert json.loads(row().kwargs)["schedule"] == {"every_seconds": 5}


def test_rows_that_are_not_ours_are_left_alone():
    from django_celery_beat.models import IntervalSchedule

    every_hour, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.HOURS)
    PeriodicTask.objects.create(name="app.jobs.cleanup", task="someone.elses", interval=every_hour)

    sync_declared_jobs([job()])
    retire_undeclared_jobs([])

    assert (row().task, row().enabled) == ("someone.elses", True)
