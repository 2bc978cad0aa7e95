"""The only way to change a status: a conditional `UPDATE … WHERE status IN (<statuses allowed to move
there>)`, following the transition tables of `batch.statuses`.

The row count says who won, so two processes can never both make the same move. A refused move
(illegal, or lost to another process) changes nothing and is logged.

Times are PostgreSQL's (`now()`), never a host's: leases, announcements and poll times written here are
compared by maintenance on another machine, whose clock may differ. `database_now(offset)` stands for
"the database's now plus offset" as a field value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, Q, Value
from django.db.models.functions import Now
from psycopg.types.json import Jsonb

from batch import sql
from batch.models import JobInstance, WorkChunk
from batch.statuses import (
    CHUNK_TRANSITIONS,
    ChunkStatus,
    JobStatus,
    chunk_statuses_leading_to,
    job_statuses_leading_to,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatabaseNow:
    offset: timedelta = timedelta(0)

    def expression(self) -> ExpressionWrapper:
        return ExpressionWrapper(Now() + Value(self.offset, output_field=DurationField()), output_field=DateTimeField())


def database_now(offset: timedelta = timedelta(0)) -> DatabaseNow:
    """A field value meaning PostgreSQL's `now()` (+ offset) when the update runs."""
    return DatabaseNow(offset)


def read_database_now():
    """PostgreSQL's clock, for comparisons made in Python against times the database wrote."""
    with connection.cursor() as cursor:
        cursor.execute(sql.DATABASE_NOW)
        return cursor.fetchone()[0]


def _orm_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {column: value.expression() if isinstance(value, DatabaseNow) else value for column, value in fields.items()}


def _sql_assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """`, column = %s, …` and its parameters; a DatabaseNow becomes `now() + %s`."""
    sql, values = [], []
    for column, value in fields.items():
        if isinstance(value, DatabaseNow):
            sql.append(f", {column} = now() + %s")
            values.append(value.offset)
        else:
            sql.append(f", {column} = %s")
            values.append(Jsonb(value) if isinstance(value, (dict, list)) else value)
    return "".join(sql), values


def change_job_status(instance_id: UUID, target: JobStatus, *, only_if: Q | None = None, **fields) -> bool:
    """Move one job instance to `target` if the table allows it from its current status (and `only_if` holds)."""
    condition = Q(id=instance_id, status__in=job_statuses_leading_to(target)) & (only_if or Q())
    moved = JobInstance.objects.filter(condition).update(status=target, update_time=Now(), **_orm_fields(fields))
    if not moved:
        logger.debug(
            "job %s: move to %s refused (not allowed from its status, or another process won)", instance_id, target
        )
    return bool(moved)


def change_chunk_status(chunk_id: UUID, target: ChunkStatus, *, only_if: Q | None = None, **fields) -> bool:
    """Move one work chunk to `target` if the table allows it from its current status (and `only_if` holds)."""
    condition = Q(id=chunk_id, status__in=chunk_statuses_leading_to(target)) & (only_if or Q())
    moved = WorkChunk.objects.filter(condition).update(status=target, update_time=Now(), **_orm_fields(fields))
    if not moved:
        logger.debug("chunk %s: move to %s refused", chunk_id, target)
    return bool(moved)


def change_owned_chunk_status(chunk_id: UUID, claim_token: UUID, target: ChunkStatus, **fields) -> bool:
    """Move an IN_PROGRESS chunk still held by the claim that drew `claim_token` to `target`.

    The same conditional update as `change_chunk_status`, written as SQL: it runs once per chunk, and the
    ORM would double its cost.
    """
    if target not in CHUNK_TRANSITIONS[ChunkStatus.IN_PROGRESS]:
        logger.warning("chunk %s: move IN_PROGRESS -> %s refused (not in the table)", chunk_id, target)
        return False
    assignments, values = _sql_assignments(fields)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.update_owned_chunk(assignments),
            [target, *values, chunk_id, ChunkStatus.IN_PROGRESS, claim_token],
        )
        moved = cursor.rowcount
    if not moved:
        logger.debug("chunk %s: move to %s refused (claim %s no longer owns it)", chunk_id, target, claim_token)
    return bool(moved)


def change_chunks_status(
    where: Q, target: ChunkStatus, *, limit: int, order_by: Iterable[str] = ("create_time", "sequence"), **fields
) -> list[tuple[UUID, str]]:
    """Move up to `limit` chunks matching `where` to `target`; return (id, target step id) of those moved.

    Rows are locked with `SKIP LOCKED`, so a row another process is moving right now is left to it.
    """
    with transaction.atomic(savepoint=False):
        moving = list(
            WorkChunk.objects.filter(where, status__in=chunk_statuses_leading_to(target))
            .order_by(*order_by)
            .select_for_update(skip_locked=True)
            .values_list("id", "target_step_id")[:limit]
        )
        if moving:
            WorkChunk.objects.filter(id__in=[chunk_id for chunk_id, _ in moving]).update(
                status=target, update_time=Now(), **_orm_fields(fields)
            )
    return moving


def change_listed_chunks_status(chunk_ids: list[UUID], target: ChunkStatus, **fields) -> list[tuple[UUID, str]]:
    """Move the listed chunks the table allows to `target`, in one statement; return (id, step) of those moved,
    in the order listed (`RETURNING` has none; emitted chunks are announced, and so run, in emission order).

    For long lists of ids known in advance (a batch just written): one array parameter, no row lock
    first; a row another process moves at the same moment is re-checked by PostgreSQL and skipped.
    """
    assignments, values = _sql_assignments(fields)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.update_listed_chunks(assignments),
            [target, *values, list(chunk_ids), chunk_statuses_leading_to(target)],
        )
        moved = {str(chunk_id): (chunk_id, step_id) for chunk_id, step_id in cursor.fetchall()}
    return [moved[str(chunk_id)] for chunk_id in chunk_ids if str(chunk_id) in moved]


def change_all_chunks_status(where: Q, target: ChunkStatus, **fields) -> int:
    """Move every chunk matching `where` that the table allows to `target`, in one statement."""
    return WorkChunk.objects.filter(where, status__in=chunk_statuses_leading_to(target)).update(
        status=target, update_time=Now(), **_orm_fields(fields)
    )
