from django.apps import AppConfig


class HeavyliftConfig(AppConfig):
    """Installed for its management commands (`demo`, `run_flower`) and the admin site's title and index; it has
    no models."""

    name = "heavylift"
    verbose_name = "Heavylift"
