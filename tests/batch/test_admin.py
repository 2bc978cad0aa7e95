"""The admin is the job dashboard: overview, job list, a read-only job page with Cancel/Restart; actions work
only with the change permission."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from batch.models import JobInstance
from batch.statuses import ChunkStatus, JobStatus
from tests.batch.factories import JobInstanceFactory, WorkChunkFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_broker(bus):
    """Starting a job announces its first chunk; these tests look at the admin, not at Redis."""


@pytest.fixture
def failed_job():
    instance = JobInstanceFactory(
        status=JobStatus.FAILED,
        progress=0.5,
        combined_records_processed=50,
        records_per_second=0.0833,
        error_count=4,
        error_message="Too many errors: 4. Last error msg was disk full",
    )
    WorkChunkFactory(instance=instance, target_step_id="generate-chunks", status=ChunkStatus.COMPLETED)
    WorkChunkFactory(instance=instance, target_step_id="sleep", status=ChunkStatus.COMPLETED, task_id="abc123")
    WorkChunkFactory(
        instance=instance,
        target_step_id="sleep",
        status=ChunkStatus.FAILED,
        error_count=4,
        error_message="Too many errors: 4. Last error msg was disk full",
    )
    return instance


def test_the_job_list_shows_status_progress_and_filters(admin_client, failed_job):
    other = JobInstanceFactory(status=JobStatus.COMPLETED, definition_id="OTHER", node_id="node-2", started_by="alice")

    page = admin_client.get(reverse("admin:batch_jobinstance_changelist"), {"status__exact": "FAILED"})

    assert page.status_code == 200
    html = page.content.decode()
    assert str(failed_job.id)[:8] in html and "<progress" in html and "50%" in html
    assert 'class="badge status-failed"' in html and "<h1>Jobs</h1>" in html
    assert str(other.id)[:8] not in html
    for filtered_by in ("status__exact=COMPLETED", "definition_id=OTHER", "node_id=node-2", "started_by=alice"):
        assert filtered_by in html


def test_search_finds_a_job_by_its_id_or_its_first_characters(admin_client, failed_job):
    other = JobInstanceFactory()
    changelist = reverse("admin:batch_jobinstance_changelist")

    for term in (str(failed_job.id), str(failed_job.id)[:8]):
        html = admin_client.get(changelist, {"q": term}).content.decode()
        assert str(failed_job.id)[:8] in html and str(other.id)[:8] not in html


def test_the_job_page_shows_chunk_counts_per_step_and_the_errors(admin_client, failed_job):
    page = admin_client.get(reverse("admin:batch_jobinstance_change", args=[failed_job.id]))

    assert page.status_code == 200
    html = page.content.decode()
    assert "generate-chunks" in html and "COMPLETED 1" in html and "FAILED 1" in html
    assert "Last error msg was disk full" in html
    assert '<td id="job-errors">4 in 1 chunk</td>' in html
    assert "&quot;sleep_ms&quot;: 0" in html, "parameters pretty-printed"


def test_the_job_page_is_read_only_with_cancel_for_a_running_job_and_restart_for_an_ended_one(admin_client, failed_job):
    running = JobInstanceFactory(status=JobStatus.IN_PROGRESS, estimated_seconds_remaining=199)
    WorkChunkFactory(instance=running, status=ChunkStatus.IN_PROGRESS)

    failed_page = admin_client.get(reverse("admin:batch_jobinstance_change", args=[failed_job.id])).content.decode()
    running_page = admin_client.get(reverse("admin:batch_jobinstance_change", args=[running.id])).content.decode()

    for html in (failed_page, running_page):
        assert 'name="_save"' not in html and "deletelink" not in html
    assert 'id="restart-job"' in failed_page and 'id="cancel-job"' not in failed_page
    assert 'id="cancel-job"' in running_page and 'id="restart-job"' not in running_page
    assert 'data-confirm="Cancel job' in running_page
    assert '<td id="job-eta">-</td>' in failed_page
    assert 'data-refresh-seconds="0"' in failed_page and 'data-refresh-seconds="3"' in running_page


def test_cancel_and_restart_from_the_job_page(admin_client):
    running = JobInstanceFactory(status=JobStatus.IN_PROGRESS)
    WorkChunkFactory(instance=running, status=ChunkStatus.IN_PROGRESS)
    cancel = reverse("admin:batch_jobinstance_cancel", args=[running.id])

    assert admin_client.get(cancel).status_code == 405, "a link cannot cancel a job"
    page = admin_client.post(cancel, follow=True)
    assert JobInstance.objects.get(id=running.id).status == JobStatus.CANCELLED
    assert f"Job {str(running.id)[:8]} cancelled" in page.content.decode()
    admin_client.post(reverse("admin:batch_jobinstance_restart", args=[running.id]))
    assert JobInstance.objects.get(id=running.id).status == JobStatus.IN_PROGRESS


@pytest.fixture
def viewer_client(client):
    """Staff with the view permission on jobs only."""
    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_jobinstance"))
    client.force_login(user)
    return client


def test_viewing_jobs_does_not_allow_changing_them(viewer_client, failed_job):
    running = JobInstanceFactory(status=JobStatus.IN_PROGRESS)
    changelist = reverse("admin:batch_jobinstance_changelist")

    html = viewer_client.get(changelist).content.decode()
    assert "cancel_jobs" not in html and "restart_jobs" not in html, "no actions without the change permission"
    page = viewer_client.get(reverse("admin:batch_jobinstance_change", args=[running.id])).content.decode()
    assert 'id="cancel-job"' not in page
    assert viewer_client.post(reverse("admin:batch_jobinstance_cancel", args=[running.id])).status_code == 403
    viewer_client.post(changelist, {"action": "cancel_jobs", "_selected_action": [running.id]})
    assert JobInstance.objects.get(id=running.id).status == JobStatus.IN_PROGRESS
    assert viewer_client.get(reverse("admin:batch_dashboard")).status_code == 200


def test_the_overview_shows_counts_throughput_running_jobs_and_nodes(admin_client, failed_job):
    running = JobInstanceFactory(status=JobStatus.IN_PROGRESS, definition_id="DIAGNOSTIC_NOOP")
    WorkChunkFactory(instance=running, status=ChunkStatus.COMPLETED)
    WorkChunkFactory.create_batch(3, instance=running, status=ChunkStatus.QUEUED)

    page = admin_client.get(reverse("admin:batch_dashboard"))

    assert page.status_code == 200
    html = page.content.decode()
    assert 'status__exact=FAILED"><span class="count">1</span>' in html
    assert "<svg" in html and "Chunks completed per minute" in html
    assert str(running.id)[:8] in html and "25%" in html
    assert "batch2-work-notification-test-node-batch" in html and ">none</span>" in html, "no live worker there"
    assert "Flower" in html
    assert (
        reverse("admin:batch_dashboard") in admin_client.get(reverse("admin:app_list", args=["batch"])).content.decode()
    )


def test_the_cancel_and_restart_actions_call_the_services(admin_client, failed_job):
    running = JobInstanceFactory(status=JobStatus.IN_PROGRESS)
    WorkChunkFactory(instance=running, status=ChunkStatus.IN_PROGRESS)
    changelist = reverse("admin:batch_jobinstance_changelist")

    admin_client.post(changelist, {"action": "cancel_jobs", "_selected_action": [running.id]})
    response = admin_client.post(
        changelist, {"action": "restart_jobs", "_selected_action": [failed_job.id, running.id]}, follow=True
    )

    assert JobInstance.objects.get(id=running.id).status == JobStatus.IN_PROGRESS, "cancelled, then restarted"
    assert JobInstance.objects.get(id=failed_job.id).status == JobStatus.IN_PROGRESS
    assert "2 job(s) restarted" in response.content.decode()
    response = admin_client.post(
        changelist,
        {"action": "cancel_jobs", "_selected_action": [JobInstanceFactory(status=JobStatus.COMPLETED).id]},
        follow=True,
    )
    assert "has already ended: it is COMPLETED" in response.content.decode()


def test_chunks_are_read_only_and_link_to_their_job_and_celery_task(admin_client, failed_job, settings):
    chunk = failed_job.chunks.get(task_id="abc123")
    changelist = reverse("admin:batch_workchunk_changelist")

    listing = admin_client.get(changelist, {"instance__id__exact": failed_job.id, "target_step_id": "sleep"})
    detail = admin_client.get(reverse("admin:batch_workchunk_change", args=[chunk.id]))

    assert listing.status_code == 200 and detail.status_code == 200
    html = listing.content.decode()
    assert f"{settings.BATCH_FLOWER_URL}/task/abc123" in html
    assert reverse("admin:batch_jobinstance_change", args=[failed_job.id]) in html
    assert 'name="_save"' not in detail.content.decode()
    assert admin_client.get(reverse("admin:batch_workchunk_add")).status_code == 403
    assert admin_client.post(reverse("admin:batch_workchunk_delete", args=[chunk.id])).status_code == 403


def test_the_job_page_shows_the_workers_that_ran_its_chunks(admin_client):
    instance = JobInstanceFactory(status=JobStatus.IN_PROGRESS)
    WorkChunkFactory.create_batch(2, instance=instance, status=ChunkStatus.COMPLETED, worker="celery@host-a/101")
    WorkChunkFactory(instance=instance, status=ChunkStatus.IN_PROGRESS, worker="celery@host-b/202")
    WorkChunkFactory(instance=instance, status=ChunkStatus.QUEUED, worker="")

    html = admin_client.get(reverse("admin:batch_jobinstance_change", args=[instance.id])).content.decode()

    assert "2 worker processes" in html
    assert '<td class="host">host-a</td>' in html and '<td class="worker">celery@host-a/101</td>' in html
    assert '<td class="host">host-b</td>' in html and "IN_PROGRESS 1" in html
