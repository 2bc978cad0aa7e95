from django.apps import AppConfig


class TestJobsConfig(AppConfig):
    name = "tests.batch.testjobs"
    label = "batch_testjobs"

    def ready(self) -> None:
        from batch.api import register
        from tests.batch.testjobs.definition import LOGGED_GATED_JOB, LOGGED_JOB

        register(LOGGED_JOB)
        register(LOGGED_GATED_JOB)
