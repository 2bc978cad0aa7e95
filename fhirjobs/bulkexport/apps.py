from django.apps import AppConfig


class BulkExportConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.bulkexport"
    label = "bulkexport"
    verbose_name = "FHIR Bulk Data export"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.bulkexport.definition import BULK_EXPORT

        register(BULK_EXPORT)
