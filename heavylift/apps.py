from django.apps import AppConfig


class HeavyliftConfig(AppConfig):
    """Installed for its management commands (`demo`, `run_flower`); it has no models."""

    name = "heavylift"
    verbose_name = "Heavylift"
