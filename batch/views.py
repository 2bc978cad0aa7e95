"""The control API: thin views over `batch.control`. Errors come back as `{"errors": [...]}`.

Who may do what (docs/security.md): an operator (a staff session, or a token with the `control` scope) sees
and acts on every job; any other caller is a client and sees, cancels and restarts only the jobs it started —
another user's job answers 404 exactly as an unknown id does. Clients may start only the definitions listed
in BATCH_CLIENT_JOB_DEFINITIONS.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batch import control
from batch.control import (
    BatchError,
    InvalidParameters,
    JobNotFound,
    JobSnapshot,
    JobStateConflict,
    JobStatus,
)
from batch.serializers import JobDetailSerializer, JobSerializer, StartJobRequest
from jobsite.auth import TokenHasScope, is_operator, missing_job_scope


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


def lacks_scope(request: Request, definition_id: str) -> Response | None:
    """A 403 when the caller's token lacks the scope jobs of this definition need to be acted on."""
    scope = missing_job_scope(request, definition_id)
    if scope is None:
        return None
    return errors([f"this token lacks the {scope.value!r} scope {definition_id} jobs need"], status.HTTP_403_FORBIDDEN)


def owner_filter(request: Request) -> str | None:
    """None for an operator (every job); the caller's user name for a client (only its own jobs)."""
    return None if is_operator(request) else request.user.get_username()


def act_on_job(request: Request, instance_id: str, action: Callable[..., JobSnapshot], answer_status: int) -> Response:
    """Cancel or restart (`action`) a job the caller may see (any, for an operator) and whose definition's scope
    its token has; the job as it is after."""
    try:
        if forbidden := lacks_scope(
            request, control.get_job(instance_id, started_by=owner_filter(request)).definition_id
        ):
            return forbidden
        job = action(instance_id, started_by=owner_filter(request))
    except BatchError as error:
        return refused(error)
    return Response(JobSerializer(job).data, status=answer_status)


class ControlView(APIView):
    """Every control endpoint: authenticated, scope-checked, and every error in the `{"errors": [...]}` shape."""

    permission_classes = [IsStaffOrTokenClient, TokenHasScope]
    parser_classes = [JSONParser]  # JSON only: the edge checks JSON bodies (heavylift/edge.py); others get 415

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, Http404):
            exc = drf_exceptions.NotFound()
        response = super().handle_exception(exc)
        if isinstance(exc, drf_exceptions.APIException):
            detail = exc.detail
            if isinstance(detail, dict):
                problems = [
                    f"{field}: {message}"
                    for field, messages in detail.items()
                    for message in (messages if isinstance(messages, list) else [messages])
                ]
            elif isinstance(detail, list):
                problems = [str(message) for message in detail]
            else:
                problems = [str(detail)]
            response.data = {"errors": problems}
        return response


class JobListView(ControlView):
    def get(self, request: Request) -> Response:
        statuses = [s for value in request.query_params.getlist("jobStatus") for s in value.split(",") if s]
        unknown = sorted(set(statuses) - set(JobStatus))
        if unknown:
            return errors(
                [f"unknown jobStatus {s!r}; one of {', '.join(JobStatus)}" for s in unknown],
                status.HTTP_400_BAD_REQUEST,
            )
        definitions = [d for value in request.query_params.getlist("jobDefinitionId") for d in value.split(",") if d]
        pages = JobPages()
        jobs = control.list_jobs(statuses, started_by=owner_filter(request), definition_ids=definitions)
        page = pages.paginate_queryset(jobs, request, view=self)
        return pages.get_paginated_response(JobSerializer(page, many=True).data)

    def post(self, request: Request) -> Response:
        start = StartJobRequest(data=request.data)
        if not start.is_valid():
            return errors(
                [f"{field}: {message}" for field, messages in start.errors.items() for message in messages],
                status.HTTP_400_BAD_REQUEST,
            )
        definition_id = start.validated_data["jobDefinitionId"]
        if not is_operator(request) and definition_id not in settings.BATCH_CLIENT_JOB_DEFINITIONS:
            return errors(
                [f"you may not start {definition_id!r} jobs here (BATCH_CLIENT_JOB_DEFINITIONS)"],
                status.HTTP_403_FORBIDDEN,
            )
        if forbidden := lacks_scope(request, definition_id):
            return forbidden
        try:
            job = control.start_job(
                definition_id,
                start.validated_data["parameters"],
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
        return act_on_job(request, instance_id, control.cancel_job, status.HTTP_202_ACCEPTED)


class JobDetailView(ControlView):
    def get(self, request: Request, instance_id: str) -> Response:
        try:
            job = control.get_job(instance_id, started_by=owner_filter(request))
        except BatchError as error:
            return refused(error)
        return Response(JobDetailSerializer(job).data)


class JobRestartView(ControlView):
    def post(self, request: Request, instance_id: str) -> Response:
        return act_on_job(request, instance_id, control.restart_job, status.HTTP_200_OK)
