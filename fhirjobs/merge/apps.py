from django.apps import AppConfig

MERGE_OPERATION = "http://hl7.org/fhir/OperationDefinition/Patient-merge"  # FHIR's, as HAPI implements it


class MergeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.merge"
    label = "merge"
    verbose_name = "FHIR Patient $merge"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.merge.definition import MERGE
        from fhirstore.capability import register_operation

        register(MERGE)
        register_operation("merge", MERGE_OPERATION, resource_type="Patient")
