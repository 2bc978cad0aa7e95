from django.apps import AppConfig

from fhirjobs.common.registration import Operation, register_job_app

OPERATIONS = [
    Operation(
        "upload-external-code-system",
        "http://hapifhir.io/fhir/OperationDefinition/CodeSystem-upload-external-code-system",
        resource_type="CodeSystem",
    )
]


class TerminologyJobsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirjobs.terminology"
    label = "terminology_jobs"
    verbose_name = "FHIR terminology jobs"

    def ready(self) -> None:
        from fhirjobs.terminology.definition import (
            TERMINOLOGY_DELETE,
            TERMINOLOGY_UPLOAD,
            TERMINOLOGY_UPLOAD_V1,
            VALUESET_EXPAND,
        )

        register_job_app([TERMINOLOGY_UPLOAD, TERMINOLOGY_UPLOAD_V1, VALUESET_EXPAND, TERMINOLOGY_DELETE], OPERATIONS)
