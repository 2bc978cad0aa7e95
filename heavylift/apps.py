from django.apps import AppConfig


class HeavyliftConfig(AppConfig):
    """Installed for its management commands (`demo`, `run_flower`), the cluster's system checks and the admin
    site's title and index; it has no models."""

    name = "heavylift"
    verbose_name = "Heavylift"

    def ready(self) -> None:
        from heavylift import cluster  # noqa: F401  registers the cluster's system checks
