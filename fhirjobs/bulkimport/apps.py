from django.apps import AppConfig

from fhirjobs.common.registration import Operation, register_job_app

OPERATIONS = [
    Operation("import", "http://hapifhir.io/fhir/OperationDefinition/import"),  # HAPI's $import
    Operation("bulk-submit", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/bulk-submit"),
    Operation("bulk-submit-status", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/bulk-submit-status"),
]


class BulkImportConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.bulkimport"
    label = "bulkimport"
    verbose_name = "FHIR bulk import"

    def ready(self) -> None:
        from fhirjobs.bulkimport.definition import BULK_IMPORT, BULK_IMPORT_V1, BULK_SUBMIT_UNDO

        register_job_app([BULK_IMPORT, BULK_IMPORT_V1, BULK_SUBMIT_UNDO], OPERATIONS)
