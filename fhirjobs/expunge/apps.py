from django.apps import AppConfig

EXPUNGE_OPERATION = "http://hapifhir.io/fhir/OperationDefinition/expunge"  # HAPI's $expunge


class ExpungeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.expunge"
    label = "expunge"
    verbose_name = "FHIR expunge of previous versions"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.expunge.definition import EXPUNGE
        from fhirstore.capability import register_operation

        register(EXPUNGE)
        register_operation("expunge", EXPUNGE_OPERATION)  # at type and instance level; listed once, as HAPI does
