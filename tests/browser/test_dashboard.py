"""The dashboard as an operator uses it, in a real browser against real workers: watch a job progress without
reloading, cancel it, restart it, see it complete; read a failed job's errors; pause a scheduled job and run it now."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from batch.control import get_job, start_job
from batch.progress import settle_totals
from batch.statuses import ChunkStatus, JobStatus
from scheduling.models import JobRun
from tests.batch.factories import JobInstanceFactory, WorkChunkFactory
from tests.batch.helpers import unique_node
from tests.processes import celery_worker, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

NODE = unique_node()
PRUNE_JOB = "scheduling.periodic.prune_job_runs"  # clustered, hourly at :17: a run seen now is the run-now


@pytest.fixture
def worker(processes, live_server):
    """One worker of NODE taking its batch chunks and the scheduled-jobs queue (it syncs the declared jobs)."""
    from batch.queues import work_notification_queue

    process = celery_worker(
        env={"NODE_ID": NODE, "BATCH_DIAGNOSTIC_JOBS": "true"},
        concurrency=2,
        name="dashboard",
        queues=[work_notification_queue(NODE), settings.SCHEDULER_QUEUE],
    )
    processes.append(process)
    return process


def fits_its_width(page, selector: str) -> bool:
    return page.evaluate(
        "(selector) => { const box = document.querySelector(selector); return box.scrollWidth <= box.clientWidth; }",
        selector,
    )


def progress_of(page, job_id) -> str:
    return page.inner_text(f'tr[data-job="{job_id}"] .progress-cell')


def test_watch_a_job_cancel_it_restart_it_and_see_it_complete(logged_in, live_server, worker, screenshot):
    page = logged_in
    job = start_job("DIAGNOSTIC_NOOP", {"chunks": 80, "sleep_ms": 500}, node_id=NODE, started_by="operator")

    page.goto(f"{live_server.url}/admin/batch/jobinstance/dashboard/")
    page.evaluate("window.notReloaded = true")
    first = progress_of(page, job.id)
    page.wait_for_function(
        """([id, before]) => {
        const cell = document.querySelector(`tr[data-job="${id}"] .progress-cell`);
        return cell && cell.innerText !== before; }""",
        arg=[str(job.id), first],
        timeout=30_000,
    )
    assert page.evaluate("window.notReloaded") is True, "the progress changed without a page reload"
    assert re.search(r"\d{2}:\d{2}:\d{2}", page.inner_text(f'tr[data-job="{job.id}"]')), "times show seconds"
    screenshot("overview-running", wide=True)

    page.click(f'tr[data-job="{job.id}"] a')
    page.wait_for_selector("#cancel-job")
    screenshot("job-running", wide=True)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-job")
    page.wait_for_selector("#job-status:text('CANCELLED')")
    assert page.inner_text("#job-eta") == "-", "a cancelled job has no ETA"
    assert page.locator("#cancel-job").count() == 0 and page.locator("input[name=_save]").count() == 0
    screenshot("job-cancelled")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#restart-job")
    page.wait_for_selector("#job-status:text('COMPLETED')", timeout=60_000)  # the page refreshes itself
    assert get_job(job.id).completed_chunks == 81
    screenshot("job-completed", wide=True)

    page.goto(f"{live_server.url}/admin/batch/jobinstance/")
    assert fits_its_width(page, "#changelist .results"), "every column of the job list shows at 1280 px"
    screenshot("job-list", wide=True)


DISK_FULL = (
    "Too many errors: 4. Last error msg was OSError: [Errno 28] No space left on device: "
    "'/var/lib/heavylift/exports/4e5ab906-c3e8-44ac-a328-1054512b78fa/Patient-000017.ndjson'"
)


def test_a_failed_job_shows_each_chunks_errors_their_true_total_and_a_retrys_next_attempt(
    logged_in, live_server, screenshot
):
    page = logged_in
    now = timezone.now()
    failed = JobInstanceFactory(
        status=JobStatus.FAILED,
        started_by="operator",
        error_count=0,  # the row's stale 0
        error_message=DISK_FULL,
        create_time=now - timedelta(seconds=200),
        start_time=now - timedelta(seconds=199),
        end_time=now,
        combined_records_processed=40,
        elapsed_seconds=199,
    )
    WorkChunkFactory(
        instance=failed,
        target_step_id="generate-chunks",
        status=ChunkStatus.COMPLETED,
        attempts=1,
        start_time=now - timedelta(seconds=199),
        end_time=now - timedelta(seconds=198),
    )
    WorkChunkFactory(
        instance=failed,
        status=ChunkStatus.COMPLETED,
        attempts=2,
        error_count=1,
        records_processed=40,
        worker="worker-vm-2@vm/2291",
        error_message="OperationalError: the connection was lost",
        start_time=now - timedelta(seconds=197),
        end_time=now - timedelta(seconds=150),
        update_time=now - timedelta(seconds=150),
    )
    WorkChunkFactory(
        instance=failed,
        status=ChunkStatus.FAILED,
        attempts=4,
        error_count=4,
        worker="worker-vm-1@vm/2314",
        error_message=DISK_FULL,
        start_time=now - timedelta(seconds=190),
        end_time=now,
    )
    retrying = JobInstanceFactory(status=JobStatus.IN_PROGRESS, started_by="operator", start_time=now, create_time=now)
    WorkChunkFactory(
        instance=retrying,
        target_step_id="generate-chunks",
        status=ChunkStatus.COMPLETED,
        attempts=1,
        start_time=now,
        end_time=now,
    )
    WorkChunkFactory(
        instance=retrying,
        status=ChunkStatus.ERRORED,
        attempts=1,
        error_count=1,
        worker="worker-vm-1@vm/2314",
        error_message="OperationalError: the connection was lost",
        announced_at=now + timedelta(seconds=5),
        start_time=now,
    )

    page.goto(f"{live_server.url}/admin/batch/jobinstance/{failed.id}/change/")
    assert page.inner_text("#job-errors") == "5 in 2 chunks", "counted from the chunks, not the job row's 0"
    assert page.inner_text("#job-eta") == "-" and "3 min 19 s" in page.inner_text("#live-summary")
    assert page.locator("#restart-job").count() == 1 and page.locator("#cancel-job").count() == 0
    assert fits_its_width(page, "#content-main"), "a long error message wraps inside the page"
    screenshot("job-failed", wide=True)

    page.goto(f"{live_server.url}/admin/batch/jobinstance/{retrying.id}/change/")
    assert re.search(r"next attempt \d{2}:\d{2}:\d{2}", page.inner_text("#live-errors"))
    screenshot("job-retrying")

    settle_totals(failed.id)  # what the engine does when a job fails
    JobInstanceFactory(
        definition_id="DIAGNOSTIC_NOOP_GATED",
        status=JobStatus.COMPLETED,
        started_by="a.long.username",
        node_id="node-with-a-long-name-7",
        create_time=now - timedelta(days=3),
        start_time=now - timedelta(days=3),
        elapsed_seconds=3600 * 26 + 60 * 7,
        combined_records_processed=12_345_678,
        progress=1,
    )
    page.goto(f"{live_server.url}/admin/batch/jobinstance/")
    assert page.inner_text(f"#result_list tr:has(a:text('{str(failed.id)[:8]}')) td.field-errors") == "5"
    assert fits_its_width(page, "#changelist .results"), "every column of the job list shows at 1280 px"
    screenshot("job-list-mixed")


def test_pause_a_scheduled_job_and_run_it_now(logged_in, live_server, worker, screenshot):
    """With the row's button, and the job page's, whose tick history then shows the run among the ticks not run."""
    page = logged_in
    wait_until(lambda: PeriodicTask.objects.filter(name=PRUNE_JOB).exists(), 60)
    changelist = f"{live_server.url}/admin/scheduling/scheduledjobschedule/"

    page.goto(changelist)
    page.locator("#result_list tr", has_text=PRUNE_JOB).locator("button", has_text="Pause").click()
    page.wait_for_selector(f"text=Paused {PRUNE_JOB}")
    assert "paused" in page.locator("#result_list tr", has_text=PRUNE_JOB).inner_text()
    screenshot("scheduled-jobs", wide=True)
    assert fits_its_width(page, "#changelist .results")

    page.locator("#result_list tr", has_text=PRUNE_JOB).locator("a").first.click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#run-job-now")
    page.wait_for_selector(f"text=Sent to run once now: {PRUNE_JOB}")
    wait_until(lambda: JobRun.objects.filter(job_name=PRUNE_JOB, outcome="succeeded").exists(), 60)
    page.reload()
    history = page.locator(".tick-history tbody tr")
    assert "succeeded" in history.first.inner_text() and "run now" in history.first.inner_text()
    assert page.locator(".tick-history .outcome-not-run").count() >= 1, "the paused hourly ticks show as not run"
    assert JobRun.objects.filter(job_name=PRUNE_JOB).count() == 1, "run now ran exactly once"
    assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    screenshot("scheduled-job-page")
