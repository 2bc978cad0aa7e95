from django.apps import AppConfig

IMPORT_OPERATION = "http://hapifhir.io/fhir/OperationDefinition/import"  # HAPI's $import
BULK_SUBMIT_OPERATION = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/bulk-submit"


class BulkImportConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.bulkimport"
    label = "bulkimport"
    verbose_name = "FHIR bulk import"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.bulkimport.definition import BULK_IMPORT, BULK_IMPORT_V1
        from fhirstore.capability import register_operation

        register(BULK_IMPORT)
        register(BULK_IMPORT_V1)
        register_operation("import", IMPORT_OPERATION)
        register_operation("bulk-submit", BULK_SUBMIT_OPERATION)
