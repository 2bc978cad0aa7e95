"""Snapshot holds: readers of the store as of a past instant keep what they read from being expunged.

A reader such as a Bulk Data export reads each resource's version current at its as-of instant, from the
history. Expunging (deleting resources with all their versions, or a resource's superseded versions) rewrites
that past: an export whose as-of precedes the expunge would silently miss resources that existed then. So a
reader holds its types while it runs (`hold_snapshot` … `release_snapshot`), and whoever expunges checks
`snapshot_holds` in the transaction that expunges and waits (outside any transaction) while one covers a type
it removes. Not a lock held for the reader's life: a row, so nothing stays open in the database while an
export takes hours, and the expunger is told who it waits for.

The race between the two is closed by advisory locks per type: `hold_snapshot` takes them exclusively before
it takes the as-of instant, `lock_against_snapshots` takes them shared before the expunge looks. Either the
hold is committed before the expunge looks (it sees it and rolls back), or the expunge commits before the
reader takes its instant. (That instant is `settled_time()`, which lags behind now while an older transaction
is open: an expunge committed just before a kick-off, while some transaction that began before that commit is
still open, can still fall after the instant. Closing that too would need a record of every expunge's commit;
the window is the age of the oldest open transaction at the kick-off, normally milliseconds.) A hold expires SNAPSHOT_HOLD_SECONDS after it was taken or last renewed, by the
database clock: a reader that died without releasing (its process killed, its row never cleaned) blocks the
expunges for that long at most; a live reader renews it as it goes (`renew_snapshot`), and learns if it lapsed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models.functions import Now

from fhirstore.models import SnapshotHold
from fhirstore.storage import settled_time

LOCK_SPACE = 0x5E4A  # the first key of the two-key advisory locks on types: keeps them apart from others'


def hold_snapshot(holder: uuid.UUID, resource_types: Iterable[str]) -> datetime:
    """Hold these types for `holder`, in the caller's transaction; the instant to read the store at
    (`storage.settled_time()`), taken under the types' locks so that an expunge either sees the hold or
    committed before it."""
    types = sorted(set(resource_types))
    _lock_exclusive(types)
    as_of = settled_time()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SnapshotHold._meta.db_table} (holder, resource_types, as_of, expires_at)"
            " VALUES (%s, %s, %s, now() + make_interval(secs => %s))",
            [holder, types, as_of, settings.SNAPSHOT_HOLD_SECONDS],
        )
    return as_of


def renew_snapshot(holder: uuid.UUID) -> bool:
    """Push the holder's hold's expiry SNAPSHOT_HOLD_SECONDS from now. False when it had lapsed already (an
    expunge may have run since: what it reads may be incomplete); True when renewed or when it holds none."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {SnapshotHold._meta.db_table} h SET expires_at = now() + make_interval(secs => %s)"
            f" FROM (SELECT holder, expires_at FROM {SnapshotHold._meta.db_table} WHERE holder = %s FOR UPDATE) old"
            " WHERE h.holder = old.holder RETURNING old.expires_at > now()",
            [settings.SNAPSHOT_HOLD_SECONDS, holder],
        )
        row = cursor.fetchone()
    return row is None or bool(row[0])


def release_snapshot(holder: uuid.UUID) -> None:
    """The holder has read all it needs (or ended otherwise): expunges over its types may go on."""
    SnapshotHold.objects.filter(holder=holder).delete()


def snapshot_holds(resource_types: Iterable[str]) -> list[SnapshotHold]:
    """The live holds over any of these types, oldest as-of first."""
    types = sorted(set(resource_types))
    return list(SnapshotHold.objects.filter(resource_types__overlap=types, expires_at__gt=Now()).order_by("as_of"))


def lock_against_snapshots(resource_types: Iterable[str]) -> bool:
    """In the transaction about to expunge these types, before `snapshot_holds`: their locks, shared, so that a
    hold taken after that look has its as-of after this transaction's commit. Never waits (an expunge may take
    them after it locked rows, in any order): False when a hold is being taken now; look again later."""
    types = sorted(set(resource_types))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(bool_and(pg_try_advisory_xact_lock_shared(%s, hashtext(t))), true)"
            " FROM unnest(%s::text[]) AS u(t)",
            [LOCK_SPACE, types],
        )
        return cursor.fetchone()[0]


def _lock_exclusive(types: list[str]) -> None:
    """The types' locks for this transaction, in name order (two holds taken at once cannot deadlock); they
    wait only for expunging transactions, which never wait for them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(t)) FROM unnest(%s::text[]) AS u(t)", [LOCK_SPACE, types]
        )
