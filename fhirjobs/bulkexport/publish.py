"""`$bulk-publish` (Bulk Data STU4 ballot): a named export, refreshed every cadence, served as a static manifest.

BULK_PUBLISH names each publication with its kick-off parameters and cadence. A clustered scheduled job
(`periodic.refresh_published_exports`, every minute) calls `refresh_publications`: a publication with no export
or one older than its cadence gets a new system-level export, owned by the user `bulk-publish`; once that export
has completed, one UPDATE of the publication's row makes it the published one (a new ETag), and the export it
replaces stays downloadable for BULK_EXPORT_RETENTION_SECONDS, for clients still reading its manifest, before the
hourly purge removes it. A published export never expires while it is published: its expiry is moved on
whenever it comes within a retention of now.

The manifest is built from the published export's file rows at each GET that is not a 304 (one query), paged
by BULK_EXPORT_MANIFEST_PAGE_FILES, and identified by the publication's ETag and the page: a client that sends it
back in `If-None-Match` gets 304 until the next swap, answered from the publication's row alone. Files are served by `$bulk-publish-file/[id]` to any
caller with the `export` scope, and only while their export is published or in its grace period.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from fhirjobs.bulkexport.exceptions import ExportFileNotFound, ExportNotFound
from fhirjobs.bulkexport.models import BulkExport, ExportFile, Publication
from fhirjobs.bulkexport.parameters import Level, parse_export_request, query_parameters
from fhirjobs.bulkexport.services import kick_off, stu4_manifest
from fhirjobs.common.status import State, job_status
from fhirstore.exceptions import FhirStoreError
from fhirstore.fhirdates import format_instant

logger = logging.getLogger(__name__)

PUBLISHER = "bulk-publish"  # the user that owns published exports
MANIFEST_TYPE = "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkPublishManifest"


def publisher() -> AbstractBaseUser:
    user, created = get_user_model().objects.get_or_create(username=PUBLISHER)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def refresh_publications(*, now: datetime | None = None) -> list[str]:
    """Start, swap in or drop each publication's next export as its state asks; what was done, for the log."""
    now = now or timezone.now()
    done = []
    for name, config in settings.BULK_PUBLISH.items():
        try:
            with transaction.atomic():
                publication, _ = Publication.objects.select_for_update().get_or_create(name=name)
                done += _refresh(publication, config, now)
        except FhirStoreError as error:  # a bad BULK_PUBLISH entry, too many running: the others go on
            logger.error("publication %s cannot be refreshed: %s", name, error.message)
            done.append(f"{name}: {error.message}")
    return done


def _refresh(publication: Publication, config: dict[str, Any], now: datetime) -> list[str]:
    retention = timedelta(seconds=settings.BULK_EXPORT_RETENTION_SECONDS)
    if publication.refreshing_id is not None:
        state = job_status(publication.refreshing.job_instance_id).state
        if state is State.RUNNING:
            return []
        if state is not State.COMPLETED:  # failed or cancelled: the next tick starts another
            publication.refreshing = None
            publication.save(update_fields=["refreshing"])
            return [f"{publication.name}: the refresh ended {state.value}, retrying"]
        old = publication.export_id
        publication.export, publication.refreshing = publication.refreshing, None
        publication.published_at, publication.etag = now, uuid.uuid4().hex
        publication.save(update_fields=["export", "refreshing", "published_at", "etag"])
        _expire(publication.export_id, now + _cadence(config) + retention)
        if old is not None:
            _expire(old, now + retention)  # a grace period for clients still reading the old manifest
        return [f"{publication.name}: published export {publication.export_id}"]
    if publication.export_id is not None and publication.published_at + _cadence(config) > now:
        expiry = BulkExport.objects.filter(id=publication.export_id).values_list("expires_at", flat=True).first()
        if expiry is not None and expiry < now + retention:
            _expire(publication.export_id, now + _cadence(config) + retention)
        return []
    request = parse_export_request(Level.SYSTEM, query_parameters(parse_qsl(config.get("parameters", ""))))
    started = kick_off(publisher(), request, base_url="", request_url=f"$bulk-publish?name={publication.name}")
    publication.refreshing = started.export
    publication.save(update_fields=["refreshing"])
    return [f"{publication.name}: refreshing by export {started.export.id}"]


def _cadence(config: dict[str, Any]) -> timedelta:
    return timedelta(seconds=int(config.get("cadence_seconds", 86_400)))


def _expire(export_id: Any, at: datetime) -> None:
    BulkExport.objects.filter(id=export_id).update(expires_at=at)
    ExportFile.objects.filter(export_id=export_id).update(expires_at=at)


@dataclass(frozen=True)
class PublishedPage:
    """A manifest page of a publication's current export, as far as a conditional GET needs it: its ETag and
    dates come from the publication's row alone, so a 304 builds no manifest (`manifest` does, on a 200)."""

    name: str
    page: int
    export_id: uuid.UUID
    transaction_time: datetime
    etag: str  # of this page of this publication's current export
    published_at: datetime
    next_refresh: datetime


def published_page(name: str | None, *, page: int) -> PublishedPage:
    """The manifest page `page` of the publication `name` (the only one when None), by one query of its row;
    ExportNotFound when there is no such publication or it has not been published yet."""
    if name is None and len(settings.BULK_PUBLISH) == 1:
        name = next(iter(settings.BULK_PUBLISH))
    if name not in settings.BULK_PUBLISH:
        raise ExportNotFound(f"No publication named {name!r} (BULK_PUBLISH names {', '.join(settings.BULK_PUBLISH)})")
    row = (
        Publication.objects.filter(name=name, export__isnull=False)
        .values("export_id", "export__transaction_time", "etag", "published_at")
        .first()
    )
    if row is None:
        raise ExportNotFound(f"Publication {name!r} has not been published yet; retry in a minute")
    return PublishedPage(
        name,
        page,
        row["export_id"],
        row["export__transaction_time"],
        f'"{row["etag"]}.{page}"',
        row["published_at"],
        row["published_at"] + _cadence(settings.BULK_PUBLISH[name]),
    )


def manifest(published: PublishedPage, *, base_url: str, page_url) -> dict[str, Any]:
    """The manifest page itself, from the export's file rows; ExportNotFound when the page does not exist."""
    page, page_files = published.page, settings.BULK_EXPORT_MANIFEST_PAGE_FILES
    files = list(
        ExportFile.objects.filter(export_id=published.export_id)
        .order_by("deleted", "resource_type", "created", "id")
        .values_list("id", "resource_type", "count", "deleted")[(page - 1) * page_files : page * page_files + 1]
    )
    if page > 1 and not files:
        raise ExportNotFound(f"Publication {published.name!r} has no manifest page {page}")
    entries: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for file_id, resource_type, count, deleted in files[:page_files]:
        entries[deleted].append(
            {"type": resource_type, "url": f"{base_url}/$bulk-publish-file/{file_id}", "count": count}
        )
    built = stu4_manifest(
        {
            "transactionTime": format_instant(published.transaction_time),
            "requiresAccessToken": True,
            "output": entries[False],
            "deleted": entries[True],
            "error": [],
            **({"link": [{"relation": "next", "url": page_url(page + 1)}]} if len(files) > page_files else {}),
        }
    )
    built["manifestType"] = MANIFEST_TYPE
    built["updateCadence"] = f"PT{int((published.next_refresh - published.published_at).total_seconds())}S"
    return built


def published_file(file_id: str) -> ExportFile:
    """A file of a published export, or of one replaced within its grace period; ExportFileNotFound otherwise."""
    try:
        key = uuid.UUID(str(file_id))
    except ValueError:
        raise ExportFileNotFound(f"Export file {file_id} is not published") from None
    file = ExportFile.objects.filter(id=key, export__owner__username=PUBLISHER, expires_at__gt=timezone.now()).first()
    if file is None:
        raise ExportFileNotFound(f"Export file {file_id} is not published (or no longer)")
    return file
