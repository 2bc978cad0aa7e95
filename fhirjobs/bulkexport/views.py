"""The Bulk Data protocol over HTTP: thin views over `parameters` and `services`.

Kick-off `GET|POST [base]/$export`, `[base]/Patient/$export`, `[base]/Group/[id]/$export` (Prefer:
respond-async) → 202 + Content-Location; `GET [status]` → 202 (X-Progress, Retry-After) or 200 + manifest;
`DELETE [status]` → 202; `GET [file]` → the NDJSON stream, or 302 to an object store's presigned URL. Every endpoint needs an authenticated caller.
With BULK_EXPORT_KICKOFF=post-only (the STU4 ballot) a GET kick-off is 405 and the POST takes its parameters
from the body only, each list as the parameter repeated.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.http import FileResponse, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.utils.http import http_date

from fhirjobs.bulkexport.exceptions import ExportFileNotFound, GetKickOffRefused, TooManyExports
from fhirjobs.bulkexport.files import blocks, gzipped, open_file
from fhirjobs.bulkexport.parameters import Level, body_parameters, parse_export_request, query_parameters
from fhirjobs.bulkexport.publish import manifest, published_file, published_page
from fhirjobs.bulkexport.services import delete_export, download_export_file, export_status, kick_off
from fhirjobs.common.http import informational, require_async, status_job_id, still_running
from fhirjobs.common.status import State
from fhirstore.exceptions import InvalidRequest
from fhirstore.http import FhirAccess, FhirView, base_url, read_json_body
from jobsite.auth import TokenHasScope
from jobsite.models import Scope

NDJSON = "application/fhir+ndjson"
POST_ONLY = "post-only"  # BULK_EXPORT_KICKOFF: the STU4 ballot's protocol
RETRY_AFTER_SECONDS = 2  # how soon to poll again: clients wait as told, so short keeps small exports quick
PUBLISH_MAX_AGE_SECONDS = 300  # a published manifest is asked again within this, so a swap is seen soon
TOO_MANY_RETRY_AFTER_SECONDS = 30  # a running export of the same user takes at least this long to make room


class ExportAccess(FhirAccess):
    """Exports belong to a user: anonymous callers are refused even where anonymous FHIR reads are allowed."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated) and super().has_permission(request, view)


class BulkExportView(FhirView):
    permission_classes = [ExportAccess, TokenHasScope]
    required_scope = Scope.EXPORT  # kick-off, status, cancel and downloads alike

    def handle_exception(self, exc: Exception) -> HttpResponse:
        response = super().handle_exception(exc)
        if isinstance(exc, TooManyExports):
            response["Retry-After"] = str(TOO_MANY_RETRY_AFTER_SECONDS)
        return response


def status_url(request, export_id) -> str:
    return f"{base_url(request)}/$export-poll-status?_jobId={export_id}"


class KickOffView(BulkExportView):
    level: Level = Level.SYSTEM

    @property
    def allowed_methods(self) -> list[str]:
        """The `Allow` header: without GET when kick-offs are POST-only."""
        methods = super().allowed_methods
        return (
            [m for m in methods if m not in ("GET", "HEAD")] if settings.BULK_EXPORT_KICKOFF == POST_ONLY else methods
        )

    def get(self, request, group_id: str | None = None):
        if settings.BULK_EXPORT_KICKOFF == POST_ONLY:
            raise GetKickOffRefused()
        return self.kick_off(request, query_parameters(_pairs(request.GET)), group_id)

    def post(self, request, group_id: str | None = None):
        if settings.BULK_EXPORT_KICKOFF == POST_ONLY:
            if request.GET:
                raise InvalidRequest("POST $export takes its parameters in the Parameters body, not the URL")
            return self.kick_off(request, body_parameters(read_json_body(request), comma_joined=False), group_id)
        return self.kick_off(
            request, body_parameters(read_json_body(request)) + query_parameters(_pairs(request.GET)), group_id
        )

    def kick_off(self, request, pairs: list[tuple[str, str]], group_id: str | None):
        preferences = require_async(request, "$export")
        export_request = parse_export_request(
            self.level, pairs, lenient="handling=lenient" in preferences, group_id=group_id
        )
        started = kick_off(
            request.user, export_request, base_url=base_url(request), request_url=request.build_absolute_uri()
        )
        message = (
            "An identical export of yours is running; poll its status URL"
            if started.reused
            else "The export has started; poll its status URL"
        )
        return informational(
            message,
            status=202,
            headers={"Content-Location": status_url(request, started.export.id)},
            warnings=[f"Ignored: {warning}" for warning in started.warnings],
        )


class PatientKickOffView(KickOffView):
    level = Level.PATIENT


class GroupKickOffView(KickOffView):
    level = Level.GROUP


class ExportStatusView(BulkExportView):
    def get(self, request):
        export_id = status_job_id(request)
        status = export_status(request.user, export_id, page=_page(request), status_url=status_url(request, export_id))
        if status.state is State.RUNNING:
            response = still_running(status.progress, RETRY_AFTER_SECONDS)
            if status.manifest is not None:  # allowPartialManifests: 202 with the files written so far (STU3)
                response.content = json.dumps(status.manifest).encode()
                response["Content-Type"] = "application/json"
            return response
        response = HttpResponse(json.dumps(status.manifest), content_type="application/json")
        if status.expires_at is not None:
            response["Expires"] = http_date(status.expires_at.timestamp())
        return response

    def delete(self, request):
        export_id = status_job_id(request)
        delete_export(request.user, export_id)
        return informational(f"Export {export_id} is cancelled and its files deleted", status=202)


class ExportFileView(BulkExportView):
    def get(self, request, file_id: str):
        accepts_gzip = "gzip" in request.headers.get("Accept-Encoding", "")
        download = download_export_file(request.user, file_id, accepts_gzip=accepts_gzip)
        if download.redirect_to is not None:  # a presigned URL of the object store, valid for a short while
            return HttpResponseRedirect(download.redirect_to)
        stream = download.stream
        if download.gzipped:  # stored compressed: sent as it is
            response = StreamingHttpResponse(blocks(stream), content_type=NDJSON)
            response["Content-Encoding"] = "gzip"
        elif accepts_gzip:  # as the reference server: ~8x fewer bytes
            response = StreamingHttpResponse(gzipped(stream), content_type=NDJSON)
            response["Content-Encoding"] = "gzip"
        else:
            response = FileResponse(stream, content_type=NDJSON)
        patch_vary_headers(response, ["Accept-Encoding"])
        return response


def _page(request) -> int:
    """The manifest page a `next` link of a partial manifest names (`&page=N`); 1 without."""
    text = request.GET.get("page", "1")
    if not text.isdigit() or int(text) < 1:
        raise InvalidRequest(f"page {text!r} is not a manifest page number (1, 2, …)")
    return int(text)


def _pairs(query_dict) -> list[tuple[str, str]]:
    return [(name, value) for name, values in query_dict.lists() for value in values]


class PublishView(BulkExportView):
    """`GET [base]/$bulk-publish[?name=…][&page=N]`: the static manifest of a publication, with an ETag; the same
    ETag in `If-None-Match` is a 304 until the publication is refreshed, checked before any manifest is built."""

    def get(self, request):
        published = published_page(request.GET.get("name"), page=_page(request))
        if published.etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
            response = HttpResponse(status=304)
        else:
            built = manifest(published, base_url=base_url(request), page_url=lambda number: _with_page(request, number))
            response = HttpResponse(json.dumps(built), content_type="application/json")
        response["ETag"] = published.etag
        response["Last-Modified"] = http_date(published.published_at.timestamp())
        # Cached by the caller only (downloads need its token), and asked again at the next refresh at the latest.
        seconds = max(0, int((published.next_refresh - timezone.now()).total_seconds()))
        response["Cache-Control"] = f"private, max-age={min(seconds, PUBLISH_MAX_AGE_SECONDS)}"
        return response


class PublishedFileView(BulkExportView):
    def get(self, request, file_id: str):
        file = published_file(file_id)
        try:
            stream = open_file(file.path)
        except FileNotFoundError:
            raise ExportFileNotFound(f"Export file {file_id} is gone") from None
        response = FileResponse(stream, content_type=NDJSON)
        response["Cache-Control"] = "private, max-age=3600"  # a published file never changes
        return response


def _with_page(request, number: int) -> str:
    query = request.GET.copy()
    query["page"] = str(number)
    return f"{base_url(request)}/$bulk-publish?{query.urlencode()}"
