"""The `--wait` of the FHIR jobs' management commands: follow the job it started until it ends.

Each command starts its job and prints what it started; with `--wait` it draws a progress bar on stderr until
the job ends and exits non-zero, with the job's status and error in one line, unless the job COMPLETED.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import TextIO, cast
from uuid import UUID

from django.core.management.base import BaseCommand, CommandError

from batch.control import BatchError, JobSnapshot, JobStatus, follow_job


def add_wait_argument(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="follow the job until it ends; non-zero exit unless it completes"
    )


def wait_for_job(command: BaseCommand, job_id: UUID | str) -> JobSnapshot:
    """The ended job, once it COMPLETED; a `CommandError` (exit 1) when it ended otherwise or cannot be followed."""
    try:
        # The bar writes to the raw stream: Django's wrapper would end every redraw with a newline. (django-stubs
        # types the wrapper's private attributes as callables, hence the cast.)
        job = follow_job(job_id, cast(TextIO, command.stderr._out))
    except BatchError as error:
        raise CommandError(str(error)) from None
    if job.status != JobStatus.COMPLETED:
        raise CommandError(f"job {job.id} {job.status}: {job.error_message or 'no message'}")
    return job
