from django.apps import AppConfig

from fhirjobs.common.registration import Operation, register_job_app

# HAPI's $expunge, at type and instance level; listed once, as HAPI does
OPERATIONS = [Operation("expunge", "http://hapifhir.io/fhir/OperationDefinition/expunge")]


class ExpungeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.expunge"
    label = "expunge"
    verbose_name = "FHIR expunge of previous versions"

    def ready(self) -> None:
        from fhirjobs.expunge.definition import EXPUNGE

        register_job_app([EXPUNGE], OPERATIONS)
