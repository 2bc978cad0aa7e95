import mimetypes

from django.apps import AppConfig
from django.conf import settings

from fhirjobs.common.registration import Operation, register_job_app

BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"  # Bulk Data Access IG v2
NDJSON_TYPE = "application/fhir+ndjson"
BULK_DATA_OPERATIONS = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
OPERATIONS = [
    Operation("export", BULK_DATA_OPERATIONS + "export"),
    Operation("export", BULK_DATA_OPERATIONS + "patient-export", resource_type="Patient"),
    Operation("export", BULK_DATA_OPERATIONS + "group-export", resource_type="Group"),
]


class BulkExportConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.bulkexport"
    label = "bulkexport"
    verbose_name = "FHIR Bulk Data export"

    def ready(self) -> None:
        # A storage that types a file by its name (django-storages' S3Storage: the object's Content-Type, which a
        # client downloading by a presigned URL receives) then types the export's files as Bulk Data says.
        mimetypes.add_type(NDJSON_TYPE, ".ndjson")
        from fhirjobs.bulkexport.definition import BULK_EXPORT, BULK_EXPORT_V1, BULK_EXPORT_V2, BULK_EXPORT_V3

        publish = [Operation("bulk-publish", BULK_DATA_OPERATIONS + "bulk-publish")] if settings.BULK_PUBLISH else []
        register_job_app(
            [BULK_EXPORT, BULK_EXPORT_V3, BULK_EXPORT_V2, BULK_EXPORT_V1],
            OPERATIONS + publish,
            instantiates=[BULK_DATA],
        )
