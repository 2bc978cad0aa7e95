"""Expunge routes; included by the project's URLs ahead of `fhirstore.urls`,
whose last route catches every other `/fhir` path."""

from django.urls import path

from fhirjobs.expunge import views
from fhirstore import converters  # noqa: F401  registers <fhirtype:> and <fhirid:>

urlpatterns = [
    path("fhir/$expunge-status", views.ExpungeStatusView.as_view(), name="expunge-status"),
    path("fhir/$expunge", views.ExpungeJobView.as_view(), name="expunge-system"),
    path("fhir/<fhirtype:resource_type>/$expunge", views.ExpungeJobView.as_view(), name="expunge-type"),
    path(
        "fhir/<fhirtype:resource_type>/<fhirid:logical_id>/$expunge",
        views.InstanceExpungeView.as_view(),
        name="expunge-instance",
    ),
]
