"""Terminology job routes; included by the site's urls ahead of the FHIR store's generic type routes."""

from django.urls import path

from fhirjobs.terminology import views

urlpatterns = [
    path("fhir/CodeSystem/$upload-external-code-system", views.UploadView.as_view(), name="terminology-upload"),
]
