from django.urls import path

from batch.views import JobDetailView, JobListView, JobRestartView

urlpatterns = [
    path("control/jobs", JobListView.as_view(), name="batch-jobs"),
    path("control/jobs/<str:instance_id>", JobDetailView.as_view(), name="batch-job"),
    path("control/jobs/<str:instance_id>/restart", JobRestartView.as_view(), name="batch-job-restart"),
]
