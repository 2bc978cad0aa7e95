from importlib import import_module

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_migrate
from django.utils.module_loading import autodiscover_modules


class SchedulingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "scheduling"
    verbose_name = "Scheduled jobs"

    def ready(self) -> None:
        """Import every app's `periodic` module (and SCHEDULING_JOB_MODULES), where `@scheduled` jobs are declared."""
        autodiscover_modules("periodic")
        for module in settings.SCHEDULING_JOB_MODULES:
            import_module(module)
        post_migrate.connect(sync_after_migrate, sender=self)


def sync_after_migrate(using: str = "default", **kwargs) -> None:
    from scheduling.registry import registry
    from scheduling.sync import sync_declared_jobs

    if settings.JOB_SCHEDULING:
        sync_declared_jobs(registry.all())
