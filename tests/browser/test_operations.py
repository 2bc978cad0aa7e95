"""The operator's new surfaces in a real browser at 1280 px: the index leading to the dashboard, why a job waits,
retrying a failed chunk, the per-step timeline. Screenshots in test-artifacts/screenshots/ (look at them)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from batch.statuses import ChunkStatus, JobStatus
from tests.batch.factories import JobInstanceFactory, WorkChunkFactory

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]


def fits_its_width(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_the_site_opens_on_the_admin_titled_heavylift_leading_to_the_dashboard(logged_in, live_server, screenshot):
    page = logged_in
    page.goto(f"{live_server.url}/")

    assert page.url.endswith("/admin/")
    assert "Heavylift" in page.title() and page.inner_text("#site-name") == "Heavylift"
    screenshot("admin-index")
    page.click("text=Batch dashboard →")
    page.wait_for_selector("text=Records processed per minute")
    assert page.url.endswith("/admin/batch/jobinstance/dashboard/")


def test_a_waiting_job_says_why_and_its_errored_chunk_can_be_retried(logged_in, live_server, screenshot):
    page = logged_in
    start = timezone.now() - timedelta(minutes=3)
    job = JobInstanceFactory(
        definition_id="DIAGNOSTIC_NOOP_GATED",
        status=JobStatus.IN_PROGRESS,
        current_gated_step_id="sleep",
        node_id="no-worker-here",
        max_concurrent_chunks=2,
        start_time=start,
        parameters={"chunks": 8, "sleep_ms": 0, "records_per_chunk": 5, "hang_at_chunk": -1},
    )
    WorkChunkFactory(
        instance=job,
        target_step_id="generate-chunks",
        status=ChunkStatus.COMPLETED,
        start_time=start,
        end_time=start + timedelta(seconds=4),
        records_processed=0,
    )
    for n in range(3):
        WorkChunkFactory(
            instance=job,
            target_step_id="sleep",
            status=ChunkStatus.COMPLETED,
            records_processed=5,
            start_time=start + timedelta(seconds=4 + 20 * n),
            end_time=start + timedelta(seconds=24 + 20 * n),
        )
        WorkChunkFactory(instance=job, target_step_id="sum-records", status=ChunkStatus.REDUCTION_READY)
    WorkChunkFactory.create_batch(2, instance=job, target_step_id="sleep", status=ChunkStatus.QUEUED)
    WorkChunkFactory.create_batch(2, instance=job, target_step_id="sleep", status=ChunkStatus.READY)
    WorkChunkFactory(
        instance=job,
        target_step_id="sleep",
        status=ChunkStatus.ERRORED,
        error_count=1,
        attempts=1,
        error_message="ConnectError: [Errno 111] Connection refused",
        worker="worker-a@host/42",
        announced_at=timezone.now() + timedelta(minutes=4),
    )

    page.goto(f"{live_server.url}/admin/batch/jobinstance/{job.id}/change/")

    waiting = page.inner_text("#why-waiting")
    assert "its concurrency cap: 2 of at most 2" in waiting
    assert "no live worker on node no-worker-here" in waiting
    assert "retry backoff after an error, until" in waiting
    assert page.locator(".gantt-bar").count() == 2, "a bar per step that ran"
    assert page.locator("tr.longest").count() == 1
    assert fits_its_width(page)
    screenshot("job-waiting")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button.retry-chunk")
    page.wait_for_selector("text=retried its failed chunks")
    screenshot("job-retried")


PRESIGNED = (
    "https://object-store.internal.example.org/bulk-exports/2026-12-06/Patient.ndjson?X-Amz-Algorithm=AWS4-HMAC"
    "-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261206%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=ab"
)


def nothing_cut(page, selector: str) -> bool:
    """Every box the selector matches shows all of its content without scrolling sideways."""
    return page.evaluate(
        "(selector) => [...document.querySelectorAll(selector)].every(box => box.scrollWidth <= box.clientWidth)",
        selector,
    )


def test_the_older_tables_show_everything_at_1280_px(logged_in, live_server, screenshot, django_user_model):
    """Issue #24: the running jobs' BY column, a job's parameters with long URLs, the API tokens' last used and
    revoked columns were cut at 1280 px."""
    from jobsite.tokens import issue_token

    page = logged_in
    long_name = "a.very.long.username@hospital-network.example.org"
    job = JobInstanceFactory(
        definition_id="DIAGNOSTIC_NOOP",
        status=JobStatus.IN_PROGRESS,
        started_by=long_name,
        start_time=timezone.now(),
        parameters={"inputs": [{"type": "Patient", "url": PRESIGNED}]},
    )
    WorkChunkFactory(instance=job, target_step_id="sleep", status=ChunkStatus.IN_PROGRESS)
    client_user = django_user_model.objects.create_user(long_name)
    tokens = [issue_token(client_user, None, 90).token for _ in range(2)]
    tokens[0].last_used_at = tokens[0].revoked_at = timezone.now()
    tokens[0].save()

    page.goto(f"{live_server.url}/admin/batch/jobinstance/dashboard/")
    assert long_name in page.inner_text("#live-running td.by")
    assert nothing_cut(page, ".table-scroll") and fits_its_width(page)
    page.goto(f"{live_server.url}/admin/batch/jobinstance/{job.id}/change/")
    assert nothing_cut(page, "pre.json") and fits_its_width(page)
    screenshot("job-long-parameters")
    page.goto(f"{live_server.url}/admin/jobsite/apitoken/")
    assert page.locator("th.column-revoked").is_visible() and nothing_cut(page, "#changelist .results")
    screenshot("api-tokens")
