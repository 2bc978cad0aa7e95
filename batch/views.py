"""The control API: thin views over `batch.control`. Errors come back as `{"errors": [...]}`."""
from __future__ import annotations

from rest_framework import status
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batch import control
from batch.control import BatchError, InvalidParameters, JobNotFound, JobStateConflict, JobStatus
from batch.serializers import JobDetailSerializer, JobSerializer, StartJobRequest


class IsStaffOrTokenClient(BasePermission):
    """API tokens (clients, scripts) may act; a browser session must belong to staff."""

    def has_permission(self, request: Request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and (request.auth is not None or user.is_staff))


class JobPages(PageNumberPagination):
    page_size = 20
    page_size_query_param = "pageSize"
    max_page_size = 100  # a page of the largest size renders in a few ms


def errors(problems: list[str], code: int) -> Response:
    return Response({"errors": problems}, status=code)


def refused(error: BatchError) -> Response:
    if isinstance(error, JobNotFound):
        return errors([str(error)], status.HTTP_404_NOT_FOUND)
    if isinstance(error, JobStateConflict):
        return errors([str(error)], status.HTTP_409_CONFLICT)
    if isinstance(error, InvalidParameters):
        return errors(error.problems, status.HTTP_400_BAD_REQUEST)
    return errors([str(error)], status.HTTP_400_BAD_REQUEST)


class JobListView(APIView):
    permission_classes = [IsStaffOrTokenClient]

    def get(self, request: Request) -> Response:
        statuses = [s for value in request.query_params.getlist("jobStatus") for s in value.split(",") if s]
        unknown = sorted(set(statuses) - set(JobStatus))
        if unknown:
            return errors([f"unknown jobStatus {s!r}; one of {', '.join(JobStatus)}" for s in unknown],
                          status.HTTP_400_BAD_REQUEST)
        pages = JobPages()
        page = pages.paginate_queryset(control.list_jobs(statuses), request, view=self)
        return pages.get_paginated_response(JobSerializer(page, many=True).data)

    def post(self, request: Request) -> Response:
        start = StartJobRequest(data=request.data)
        if not start.is_valid():
            return errors([f"{field}: {message}" for field, messages in start.errors.items() for message in messages],
                          status.HTTP_400_BAD_REQUEST)
        try:
            job = control.start_job(
                start.validated_data["jobDefinitionId"], start.validated_data["parameters"],
                started_by=request.user.get_username(),
                max_concurrent_chunks=start.validated_data["maxConcurrentChunks"],
            )
        except BatchError as error:
            return refused(error)
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)

    def delete(self, request: Request) -> Response:
        instance_id = request.query_params.get("instanceId")
        if not instance_id:
            return errors(["instanceId is required: DELETE /control/jobs?instanceId=<id>"], status.HTTP_400_BAD_REQUEST)
        try:
            job = control.cancel_job(instance_id)
        except BatchError as error:
            return refused(error)
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class JobDetailView(APIView):
    permission_classes = [IsStaffOrTokenClient]

    def get(self, request: Request, instance_id: str) -> Response:
        try:
            job = control.get_job(instance_id)
        except BatchError as error:
            return refused(error)
        return Response(JobDetailSerializer(job).data)


class JobRestartView(APIView):
    permission_classes = [IsStaffOrTokenClient]

    def post(self, request: Request, instance_id: str) -> Response:
        try:
            job = control.restart_job(instance_id)
        except BatchError as error:
            return refused(error)
        return Response(JobSerializer(job).data)
