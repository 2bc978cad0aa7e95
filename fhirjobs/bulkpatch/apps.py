from django.apps import AppConfig

BULK_PATCH_OPERATION = "http://hapifhir.io/fhir/OperationDefinition/hapi.fhir.bulk-patch"  # HAPI's


class BulkPatchConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.bulkpatch"
    label = "bulkpatch"
    verbose_name = "FHIR bulk patch"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.bulkpatch.definition import BULK_PATCH
        from fhirstore.capability import register_operation

        register(BULK_PATCH)
        register_operation("hapi.fhir.bulk-patch", BULK_PATCH_OPERATION)
