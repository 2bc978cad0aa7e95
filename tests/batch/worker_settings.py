"""Settings of the worker processes the batch acceptance tests start: the project's, plus the test jobs."""

from heavylift.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.batch.testjobs.apps.TestJobsConfig"]  # noqa: F405
