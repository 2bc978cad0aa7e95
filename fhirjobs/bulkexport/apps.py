from django.apps import AppConfig

BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"  # Bulk Data Access IG v2
OPERATIONS = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"


class BulkExportConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.bulkexport"
    label = "bulkexport"
    verbose_name = "FHIR Bulk Data export"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.bulkexport.definition import BULK_EXPORT, BULK_EXPORT_V1, BULK_EXPORT_V2
        from fhirstore.capability import register_instantiates, register_operation

        register(BULK_EXPORT)
        register(BULK_EXPORT_V2)
        register(BULK_EXPORT_V1)
        register_instantiates(BULK_DATA)
        register_operation("export", OPERATIONS + "export")
        register_operation("export", OPERATIONS + "patient-export", resource_type="Patient")
        register_operation("export", OPERATIONS + "group-export", resource_type="Group")
