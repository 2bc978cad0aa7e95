from django.apps import AppConfig

from fhirjobs.common.registration import Operation, register_job_app

BULK_PATCH_OPERATION = "http://hapifhir.io/fhir/OperationDefinition/hapi.fhir.bulk-patch"  # HAPI's


class BulkPatchConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.bulkpatch"
    label = "bulkpatch"
    verbose_name = "FHIR bulk patch"

    def ready(self) -> None:
        from fhirjobs.bulkpatch.definition import BULK_PATCH

        register_job_app([BULK_PATCH], [Operation("hapi.fhir.bulk-patch", BULK_PATCH_OPERATION)])
