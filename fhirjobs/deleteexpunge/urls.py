"""Delete-expunge routes; included by the project's URLs ahead of `fhirstore.urls`,
whose last route catches every other `/fhir` path."""
from django.urls import path

from fhirjobs.deleteexpunge import views

urlpatterns = [
    path("fhir/$delete-expunge", views.DeleteExpungeView.as_view(), name="delete-expunge"),
    path("fhir/$delete-expunge-status", views.DeleteExpungeStatusView.as_view(), name="delete-expunge-status"),
]
