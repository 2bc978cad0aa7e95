"""A job's stop handler (`JobDefinitionBuilder.on_stop`): called once, after commit, when the job ends FAILED
or CANCELLED, so what the job promised outside the engine can say it stopped; and its restart handler
(`on_restart`), called once per restart, so that can be taken back."""

from __future__ import annotations

import pytest

from batch.control import cancel_job, get_job, restart_job, start_job
from batch.exceptions import JobFailed
from batch.statuses import JobStatus
from tests.batch.helpers import emit

pytestmark = pytest.mark.django_db(transaction=True)


def fail(context, sink) -> int:
    raise JobFailed("bad row")


def test_a_failed_job_calls_its_stop_handler_once_with_its_error(define_job, bus):
    stopped = []
    job = define_job(lambda b: b.first_step("plan", emit(2)).last_step("work", fail).on_stop(stopped.append))
    instance = start_job(job.id, {})

    bus.drain()

    assert get_job(instance.id).status == JobStatus.FAILED
    assert [(s.instance_id, s.status, s.error_message) for s in stopped] == [(instance.id, "FAILED", "bad row")]


def test_a_cancelled_job_calls_its_stop_handler_and_a_completed_one_does_not(define_job, bus):
    stopped = []
    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", lambda c, s: 1).on_stop(stopped.append))
    cancelled, completed = start_job(job.id, {}), start_job(job.id, {})

    cancel_job(cancelled.id)
    bus.drain()

    assert get_job(completed.id).status == JobStatus.COMPLETED
    assert [(s.instance_id, s.status, s.error_message) for s in stopped] == [
        (cancelled.id, "CANCELLED", "Job instance cancelled at step plan")
    ]


def test_a_restarted_job_calls_its_restart_handler_once_while_in_progress(define_job, bus):
    seen = []

    def restarted(job) -> None:
        seen.append((job.instance_id, get_job(job.instance_id).status))

    job = define_job(lambda b: b.first_step("plan", emit(1)).last_step("work", lambda c, s: 1).on_restart(restarted))
    instance = start_job(job.id, {})
    cancel_job(instance.id)
    bus.drain()
    assert seen == []  # a stop is not a restart

    restart_job(instance.id)
    assert seen == [(instance.id, JobStatus.IN_PROGRESS)]
    bus.drain()

    assert get_job(instance.id).status == JobStatus.COMPLETED
    assert len(seen) == 1
