from django.apps import AppConfig

from fhirjobs.common.registration import Operation, register_job_app

MERGE_OPERATION = "http://hl7.org/fhir/OperationDefinition/Patient-merge"  # FHIR's, as HAPI implements it
REPLACE_REFERENCES_OPERATION = "http://hapifhir.io/fhir/OperationDefinition/hapi.fhir.replace-references"


class MergeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.merge"
    label = "merge"
    verbose_name = "FHIR Patient $merge"

    def ready(self) -> None:
        from fhirjobs.merge.definition import MERGE, REPLACE_REFERENCES

        register_job_app(
            [MERGE, REPLACE_REFERENCES],
            [
                Operation("merge", MERGE_OPERATION, resource_type="Patient"),
                Operation("hapi.fhir.replace-references", REPLACE_REFERENCES_OPERATION),
            ],
        )
