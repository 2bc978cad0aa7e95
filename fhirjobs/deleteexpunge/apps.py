from django.apps import AppConfig

from fhirjobs.common.registration import Operation, register_job_app

OPERATIONS = [Operation("delete-expunge", "http://hapifhir.io/fhir/OperationDefinition/delete-expunge")]  # HAPI's


class DeleteExpungeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.deleteexpunge"
    label = "deleteexpunge"
    verbose_name = "FHIR delete-expunge"

    def ready(self) -> None:
        from fhirjobs.deleteexpunge.definition import DELETE_EXPUNGE

        register_job_app([DELETE_EXPUNGE], OPERATIONS)
