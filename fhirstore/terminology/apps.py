from django.apps import AppConfig

HL7_OPERATIONS = "http://hl7.org/fhir/OperationDefinition/"
HAPI_OPERATIONS = "http://hapifhir.io/fhir/OperationDefinition/"


class TerminologyConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "fhirstore.terminology"
    label = "terminology"
    verbose_name = "FHIR terminology"

    def ready(self) -> None:
        from fhirstore.capability import register_operation

        for name in ("lookup", "validate-code", "subsumes"):
            register_operation(name, f"{HL7_OPERATIONS}CodeSystem-{name}", resource_type="CodeSystem")
        for name in ("apply-codesystem-delta-add", "apply-codesystem-delta-remove"):
            register_operation(name, f"{HAPI_OPERATIONS}CodeSystem-{name}", resource_type="CodeSystem")
        for name in ("expand", "validate-code"):
            register_operation(name, f"{HL7_OPERATIONS}ValueSet-{name}", resource_type="ValueSet")
        register_operation(
            "invalidate-expansion", f"{HAPI_OPERATIONS}ValueSet-invalidate-expansion", resource_type="ValueSet"
        )
