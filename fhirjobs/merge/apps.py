from django.apps import AppConfig

MERGE_OPERATION = "http://hl7.org/fhir/OperationDefinition/Patient-merge"  # FHIR's, as HAPI implements it
REPLACE_REFERENCES_OPERATION = "http://hapifhir.io/fhir/OperationDefinition/hapi.fhir.replace-references"


class MergeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.merge"
    label = "merge"
    verbose_name = "FHIR Patient $merge"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.merge.definition import MERGE, REPLACE_REFERENCES
        from fhirstore.capability import register_operation

        register(MERGE)
        register(REPLACE_REFERENCES)
        register_operation("merge", MERGE_OPERATION, resource_type="Patient")
        register_operation("hapi.fhir.replace-references", REPLACE_REFERENCES_OPERATION)
