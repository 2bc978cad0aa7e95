"""Bulk import routes; included by the project's URLs ahead of `fhirstore.urls`,
whose last route catches every other `/fhir` path."""

from django.urls import path

from fhirjobs.bulkimport import views
from fhirstore import converters  # noqa: F401  registers <fhirtype:> and <fhirid:>

urlpatterns = [
    path("fhir/$import", views.ImportKickOffView.as_view(), name="bulkimport-kickoff"),
    path("fhir/$import-poll-status", views.ImportStatusView.as_view(), name="bulkimport-status"),
    path("fhir/$import-errors/<str:import_id>", views.ImportErrorsView.as_view(), name="bulkimport-errors"),
    path("fhir/$bulk-submit", views.BulkSubmitView.as_view(), name="bulkimport-submit"),
    path("fhir/$bulk-submit-status", views.BulkSubmitStatusView.as_view(), name="bulkimport-submit-status"),
    path("fhir/$bulk-submit-poll-status", views.BulkSubmitPollStatusView.as_view(), name="bulkimport-submit-poll"),
]
