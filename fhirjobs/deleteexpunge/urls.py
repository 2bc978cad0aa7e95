"""Delete-expunge routes; included by the project's URLs ahead of `fhirstore.urls`,
whose last route catches every other `/fhir` path."""

from django.urls import path

from fhirjobs.deleteexpunge import views
from fhirstore import converters  # noqa: F401  registers <fhirtype:>

urlpatterns = [
    path("fhir/$delete-expunge", views.DeleteExpungeView.as_view(), name="delete-expunge"),
    path("fhir/$delete-expunge-status", views.DeleteExpungeStatusView.as_view(), name="delete-expunge-status"),
    # The store's `/fhir/[Type]` (search, create, conditional update) plus DELETE ?…&_expunge=true.
    path("fhir/<fhirtype:resource_type>", views.TypeDeleteExpungeView.as_view(), name="delete-expunge-type"),
]
