from django.apps import AppConfig

DELETE_EXPUNGE_OPERATION = "http://hapifhir.io/fhir/OperationDefinition/delete-expunge"  # HAPI's $delete-expunge


class DeleteExpungeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.deleteexpunge"
    label = "deleteexpunge"
    verbose_name = "FHIR delete-expunge"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.deleteexpunge.definition import DELETE_EXPUNGE
        from fhirstore.capability import register_operation

        register(DELETE_EXPUNGE)
        register_operation("delete-expunge", DELETE_EXPUNGE_OPERATION)
