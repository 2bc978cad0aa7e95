from django.apps import AppConfig


class TerminologyJobsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.terminology"
    label = "terminology_jobs"
    verbose_name = "FHIR terminology jobs"

    def ready(self) -> None:
        from batch.api import register
        from fhirjobs.terminology.definition import TERMINOLOGY_DELETE, TERMINOLOGY_UPLOAD, VALUESET_EXPAND
        from fhirstore.capability import register_operation

        register(TERMINOLOGY_UPLOAD)
        register(VALUESET_EXPAND)
        register(TERMINOLOGY_DELETE)
        register_operation("upload-external-code-system",
                           "http://hapifhir.io/fhir/OperationDefinition/CodeSystem-upload-external-code-system",
                           resource_type="CodeSystem")
