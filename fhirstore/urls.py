"""`/fhir` routes. Included at the site root (`path("", include(...))`) so the base URL `/fhir` itself,
where transaction bundles are POSTed, needs no trailing slash. More specific FHIR routes (operations such
as `$export`) go before the last, catch-all pattern.
"""
from django.urls import include, path, re_path, register_converter

from fhirstore import views


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

urlpatterns = [
    path("", include("fhirstore.bulkexport.urls")),  # $export operations, ahead of the type routes
    path("", include("fhirstore.bulkimport.urls")),  # $import, $bulk-submit
    path("", include("fhirstore.reindex.urls")),  # $reindex, $reindex-dryrun
    path("", include("fhirstore.terminology.urls")),  # $lookup, $expand, …
    path("fhir", views.SystemView.as_view(), name="fhir-system"),
    path("fhir/metadata", views.MetadataView.as_view(), name="fhir-metadata"),
    path("fhir/<fhirtype:resource_type>", views.TypeView.as_view(), name="fhir-type"),
    path("fhir/<fhirtype:resource_type>/_search", views.TypeSearchView.as_view(), name="fhir-search"),
    path("fhir/<fhirtype:resource_type>/<fhirid:logical_id>", views.InstanceView.as_view(), name="fhir-instance"),
    path("fhir/<fhirtype:resource_type>/<fhirid:logical_id>/_history", views.HistoryView.as_view(),
         name="fhir-history"),
    path("fhir/<fhirtype:resource_type>/<fhirid:logical_id>/_history/<int:version_id>", views.VersionView.as_view(),
         name="fhir-vread"),
    re_path(r"^fhir/", views.NotFoundView.as_view(), name="fhir-not-found"),
]
