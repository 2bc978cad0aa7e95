from django.apps import AppConfig


class BulkImportConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.bulkimport"
    label = "bulkimport"
    verbose_name = "FHIR bulk import"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.bulkimport.definition import BULK_IMPORT, BULK_IMPORT_V1

        register(BULK_IMPORT)
        register(BULK_IMPORT_V1)
