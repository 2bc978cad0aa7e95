from django.apps import AppConfig

from fhirjobs.common.registration import Operation, register_job_app

# HAPI's $expunge, at system, type and instance level; listed once, as HAPI does
OPERATIONS = [Operation("expunge", "http://hapifhir.io/fhir/OperationDefinition/expunge")]


class ExpungeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.expunge"
    label = "expunge"
    verbose_name = "FHIR expunge"

    def ready(self) -> None:
        from fhirjobs.expunge.definition import EXPUNGE, EXPUNGE_V1

        register_job_app([EXPUNGE, EXPUNGE_V1], OPERATIONS)
