"""Patient `$merge` and `$hapi.fhir.replace-references`; included by the project's URLs ahead of `fhirstore.urls`, whose last route catches every
other `/fhir` path."""

from django.urls import path

from fhirjobs.merge import views

urlpatterns = [
    path("fhir/Patient/$merge", views.MergeView.as_view(), name="patient-merge"),
    path("fhir/$hapi.fhir.replace-references", views.ReplaceReferencesView.as_view(), name="replace-references"),
]
