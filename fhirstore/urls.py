"""`/fhir` routes. Included at the site root (`path("", include(...))`) so the base URL `/fhir` itself,
where transaction bundles are POSTed, needs no trailing slash. The jobs' operations (`$export`, `$import`,
`$reindex`…) are included by the project's URLs ahead of these, whose last pattern catches everything.
"""

from django.urls import include, path, re_path

from fhirstore import converters, views  # noqa: F401  converters: registers <fhirtype:> and <fhirid:>

urlpatterns = [
    path("", include("fhirstore.terminology.urls")),  # $lookup, $expand, … (the store's own operations)
    path("fhir", views.SystemView.as_view(), name="fhir-system"),
    path("fhir/metadata", views.MetadataView.as_view(), name="fhir-metadata"),
    path("fhir/<fhirtype:resource_type>", views.TypeView.as_view(), name="fhir-type"),
    path("fhir/<fhirtype:resource_type>/_search", views.TypeSearchView.as_view(), name="fhir-search"),
    path("fhir/<fhirtype:resource_type>/<fhirid:logical_id>", views.InstanceView.as_view(), name="fhir-instance"),
    path(
        "fhir/<fhirtype:resource_type>/<fhirid:logical_id>/_history", views.HistoryView.as_view(), name="fhir-history"
    ),
    path(
        "fhir/<fhirtype:resource_type>/<fhirid:logical_id>/_history/<int:version_id>",
        views.VersionView.as_view(),
        name="fhir-vread",
    ),
    re_path(r"^fhir/", views.NotFoundView.as_view(), name="fhir-not-found"),
]
