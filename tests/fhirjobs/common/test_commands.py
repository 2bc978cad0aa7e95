"""`--wait` of the FHIR jobs' commands (reindex, delete_expunge, import_fhir, upload/delete_terminology): the
ended job when it completed, one clear line and a non-zero exit otherwise."""

import io
import uuid

import pytest
from django.core.management.base import BaseCommand, CommandError

from batch.control import JobStatus, cancel_job, start_job
from fhirjobs.common.commands import wait_for_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def command() -> BaseCommand:
    return BaseCommand(stdout=io.StringIO(), stderr=io.StringIO())


@pytest.mark.django_db(transaction=True)  # the in-process bus runs the job on commit
def test_a_completed_job_is_returned_after_its_progress_bar(bus, command):
    job = start_job("DIAGNOSTIC_NOOP", {"chunks": 2})
    bus.drain()

    assert wait_for_job(command, job.id).status == JobStatus.COMPLETED
    assert "3/3 chunks" in command.stderr._out.getvalue()  # the planning chunk and the two it emitted


def test_a_job_that_ended_otherwise_is_an_error_with_its_status(bus, command):
    job = start_job("DIAGNOSTIC_NOOP", {"chunks": 2})
    cancel_job(job.id)

    with pytest.raises(CommandError, match=f"^job {job.id} CANCELLED: "):
        wait_for_job(command, job.id)


def test_a_job_that_cannot_be_followed_is_an_error_not_a_traceback(command):
    with pytest.raises(CommandError, match="not found|no job|unknown"):
        wait_for_job(command, uuid.uuid4())
