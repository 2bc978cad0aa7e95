"""The `<fhirtype:…>` and `<fhirid:…>` path converters of every `/fhir` route, the store's and the jobs'.

Registered when this module is first imported: a URL module that uses them imports it first.
"""

from django.urls import register_converter


class ResourceTypeConverter:
    regex = "[A-Z][A-Za-z]{0,63}"  # unknown names reach the views, which answer 404 with an OperationOutcome

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class LogicalIdConverter(ResourceTypeConverter):
    regex = r"[A-Za-z0-9\-.]{1,64}"  # FHIR's id; `$operation` paths do not match


register_converter(ResourceTypeConverter, "fhirtype")
register_converter(LogicalIdConverter, "fhirid")
