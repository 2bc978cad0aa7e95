from django.apps import AppConfig


class BatchConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "batch"
    verbose_name = "Batch jobs"

    def ready(self) -> None:
        from django.conf import settings

        from batch.api import register
        from batch.diagnostics import DIAGNOSTIC_NOOP, DIAGNOSTIC_NOOP_GATED, DIAGNOSTIC_SPIN
        from batch.notifications import use_publisher
        from batch.tasks import publish_work_notifications

        use_publisher(publish_work_notifications)
        if (
            settings.BATCH_DIAGNOSTIC_JOBS
        ):  # for tests and demos only: anyone allowed to start them could load the cluster
            register(DIAGNOSTIC_NOOP)
            register(DIAGNOSTIC_NOOP_GATED)
            register(DIAGNOSTIC_SPIN)
