from django.apps import AppConfig


class FhirstoreConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirstore"
    verbose_name = "FHIR store"
