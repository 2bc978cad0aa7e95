"""The admin is the job dashboard: pages render with progress, chunk counts and errors; actions work."""
import pytest
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
    instance = JobInstanceFactory(status=JobStatus.FAILED, progress=0.5, combined_records_processed=50,
                                  records_per_second=0.0833, error_count=4,
                                  error_message="Too many errors: 4. Last error msg was disk full")
    WorkChunkFactory(instance=instance, target_step_id="generate-chunks", status=ChunkStatus.COMPLETED)
    WorkChunkFactory(instance=instance, target_step_id="sleep", status=ChunkStatus.COMPLETED, task_id="abc123")
    WorkChunkFactory(instance=instance, target_step_id="sleep", status=ChunkStatus.FAILED, error_count=4,
                     error_message="Too many errors: 4. Last error msg was disk full")
    return instance


def test_the_job_list_shows_status_progress_and_filters(admin_client, failed_job):
    other = JobInstanceFactory(status=JobStatus.COMPLETED, definition_id="OTHER")

    page = admin_client.get(reverse("admin:batch_jobinstance_changelist"), {"status__exact": "FAILED"})

    assert page.status_code == 200
    html = page.content.decode()
    assert str(failed_job.id)[:8] in html and "<progress" in html and "50%" in html and "0.1" in html
    assert str(other.id)[:8] not in html


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
    assert "generate-chunks" in html and "COMPLETED 1" in html and "COMPLETED 1, FAILED 1" in html
    assert "Last error msg was disk full" in html


def test_the_cancel_and_restart_actions_call_the_services(admin_client, failed_job):
    running = JobInstanceFactory(status=JobStatus.IN_PROGRESS)
    WorkChunkFactory(instance=running, status=ChunkStatus.IN_PROGRESS)
    changelist = reverse("admin:batch_jobinstance_changelist")

    admin_client.post(changelist, {"action": "cancel_jobs", "_selected_action": [running.id]})
    response = admin_client.post(changelist, {"action": "restart_jobs", "_selected_action": [failed_job.id, running.id]},
                                 follow=True)

    assert JobInstance.objects.get(id=running.id).status == JobStatus.IN_PROGRESS, "cancelled, then restarted"
    assert JobInstance.objects.get(id=failed_job.id).status == JobStatus.IN_PROGRESS
    assert "2 job(s) restarted" in response.content.decode()
    response = admin_client.post(changelist, {"action": "cancel_jobs", "_selected_action": [
        JobInstanceFactory(status=JobStatus.COMPLETED).id]}, follow=True)
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
