from django.apps import AppConfig


class JobsiteConfig(AppConfig):
    name = "jobsite"
    verbose_name = "Heavylift site"

    def ready(self) -> None:
        from jobsite import cluster  # noqa: F401  registers the cluster's system checks
