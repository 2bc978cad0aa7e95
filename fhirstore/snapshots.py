"""Snapshot holds: readers of the store as of a past instant keep what they read from being expunged.

A reader such as a Bulk Data export reads each resource's version current at its as-of instant, from the
history. Expunging (deleting resources with all their versions, or a resource's superseded versions) rewrites
that past: an export whose as-of precedes the expunge would silently miss resources that existed then. So a
reader holds its types while it runs (`hold_snapshot` … `release_snapshot`), and whoever expunges checks
`snapshot_holds` in the transaction that expunges and waits (outside any transaction) while one covers a type
it removes. Not a lock held for the reader's life: a row, so nothing stays open in the database while an
export takes hours, and the expunger is told who it waits for. A writer that must not have its types expunged
under it (an import) holds them the same way, without an as-of (`hold_against_expunges`).

Three races between the two sides, and what closes each:

- *A hold taken while an expunge looks.* Advisory locks per type: `hold_snapshot` takes them exclusively,
  `lock_against_snapshots` takes them shared (never waiting) before the expunge looks. Either the hold is
  committed before the expunge looks (it sees it and rolls back), or the expunge commits before the hold is
  taken.
- *An as-of before an expunge that committed before the hold.* The as-of is the settled time (`storage`), which
  lags behind the clock while an older transaction is open; and the kick-off may have begun before the expunge.
  So every expunging transaction stamps its types just before it commits (`mark_expunged`: an `ExpungeMark`, by
  the database clock, after every row it removes was locked); the settled time is read by the clock after the
  types' locks are taken, and a hold is taken only with an as-of at or after the types' marks. Until the
  settled time passes the mark (the transactions older than the expunge end: normally milliseconds) the kick-off
  waits, SETTLE_SECONDS at most; then `SnapshotUnsettled` (retry).
- *A hold lapsing while its reader renews it.* A hold expires SNAPSHOT_HOLD_SECONDS after it was taken or last
  renewed, by the database clock: a reader that died without releasing blocks the expunges for that long at
  most; a live reader renews it as it goes (`renew_snapshot`), and learns if it lapsed. The expunge locks the
  holds it looks at (shared) and judges them by the clock once locked; a renewal locks its hold and judges it by
  the clock once locked. So a renewal under way when an expunge looks is waited for (a statement long) and seen,
  and a renewal after the look waits for the expunge's commit and finds the hold lapsed if the expunge did.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db import connection

from fhirstore.exceptions import SnapshotUnsettled
from fhirstore.models import ExpungeMark, SnapshotHold
from fhirstore.storage import settled_time

LOCK_SPACE = 0x5E4A  # the first key of the two-key advisory locks on types: keeps them apart from others'
SETTLE_SECONDS = 5.0  # the most a kick-off waits for the transactions older than a just-committed expunge
SETTLE_POLL_SECONDS = 0.01  # between looks at them: they normally end within milliseconds

_HOLDS = SnapshotHold._meta.db_table
_MARKS = ExpungeMark._meta.db_table


def hold_snapshot(holder: uuid.UUID, resource_types: Iterable[str]) -> datetime:
    """Hold these types for `holder`, in the caller's transaction; the instant to read the store at (the settled
    time), taken under the types' locks and not before their last expunge: an expunge either sees the hold or
    is in the store as of that instant. SnapshotUnsettled when transactions older than that expunge stay open."""
    types = sorted(set(resource_types))
    _lock_exclusive(types)
    as_of = _settled_after_expunges(types)
    _insert_hold(holder, types, as_of, "export")
    return as_of


def hold_snapshot_again(holder: uuid.UUID, resource_types: Iterable[str], as_of: datetime) -> bool:
    """A reader that released its hold (a failed or cancelled export) and runs again reads as of its old
    instant: hold its types as of it again, in the caller's transaction. True when nothing of them was expunged
    since; otherwise the hold is taken lapsed (False), so that the reader learns at its next renewal that what
    it reads may be incomplete."""
    types = sorted(set(resource_types))
    _lock_exclusive(types)
    last = _last_expunged(types)
    intact = last is None or last <= as_of
    _insert_hold(holder, types, as_of, "export", lapsed=not intact)
    return intact


def hold_against_expunges(holder: uuid.UUID, resource_types: Iterable[str], purpose: str) -> None:
    """Hold these types for a writer that reads no history (an import): expunges of them wait until it releases
    (`release_snapshot`); renewed and lapsing as a reader's hold."""
    types = sorted(set(resource_types))
    _lock_exclusive(types)
    _insert_hold(holder, types, settled_time(), purpose)


def renew_snapshot(holder: uuid.UUID) -> bool:
    """Push the holder's hold's expiry SNAPSHOT_HOLD_SECONDS from now. False when it had lapsed already (an
    expunge may have run since: what it reads may be incomplete; a lapsed hold stays lapsed); True when renewed
    or when it holds none. Judged by the clock once the hold is locked (see the races above)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_HOLDS} h SET expires_at = CASE WHEN old.expires_at > clock_timestamp()"
            " THEN clock_timestamp() + make_interval(secs => %s) ELSE old.expires_at END"
            f" FROM (SELECT holder, expires_at FROM {_HOLDS} WHERE holder = %s FOR UPDATE) old"
            " WHERE h.holder = old.holder RETURNING old.expires_at > clock_timestamp()",
            [settings.SNAPSHOT_HOLD_SECONDS, holder],
        )
        row = cursor.fetchone()
    return row is None or bool(row[0])


def release_snapshot(holder: uuid.UUID) -> None:
    """The holder has read all it needs (or ended otherwise): expunges over its types may go on."""
    SnapshotHold.objects.filter(holder=holder).delete()


def snapshot_holds(resource_types: Iterable[str]) -> list[SnapshotHold]:
    """The live holds over any of these types, oldest as-of first: locked (shared) until the caller's transaction
    ends, each judged by the clock once locked, so a renewal under way is waited for and a later one sees this."""
    types = sorted(set(resource_types))
    return list(
        SnapshotHold.objects.raw(
            f"WITH locked AS (SELECT * FROM {_HOLDS} WHERE resource_types && %s::varchar[] FOR SHARE)"
            " SELECT * FROM locked WHERE expires_at > clock_timestamp() ORDER BY as_of",
            [types],
        )
    )


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


def mark_expunged(resource_types: Iterable[str]) -> None:
    """In an expunging transaction, after its last delete, just before it commits: stamp its types with the
    clock, so that no snapshot is taken as of an earlier instant (`hold_snapshot`). Types in name order: two
    expunges marking the same types cannot deadlock."""
    types = sorted(set(resource_types))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_MARKS} (resource_type, expunged_at) SELECT t, clock_timestamp()"
            " FROM unnest(%s::text[]) AS u(t) ORDER BY t"
            f" ON CONFLICT (resource_type) DO UPDATE SET expunged_at = greatest({_MARKS}.expunged_at,"
            " excluded.expunged_at)",
            [types],
        )


def _settled_after_expunges(types: list[str]) -> datetime:
    """The settled time, once it is at or after the types' last expunge (see the races above)."""
    last = _last_expunged(types)
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        as_of = settled_time()
        if last is None or as_of >= last:
            return as_of
        if time.monotonic() >= deadline:
            raise SnapshotUnsettled(
                f"{', '.join(types)} were expunged at {last.isoformat()}, after transactions still open began: "
                "the store as of now is not settled yet; retry in a moment"
            )
        time.sleep(SETTLE_POLL_SECONDS)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # the next look sees the sessions as they are then


def _last_expunged(types: list[str]) -> datetime | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max(expunged_at) FROM {_MARKS} WHERE resource_type = ANY(%s::text[])", [types])
        return cursor.fetchone()[0]


def _insert_hold(holder: uuid.UUID, types: list[str], as_of: datetime, purpose: str, *, lapsed: bool = False) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {_HOLDS} (holder, purpose, resource_types, as_of, expires_at)"
            " VALUES (%s, %s, %s, %s, CASE WHEN %s THEN '-infinity'::timestamptz"
            " ELSE clock_timestamp() + make_interval(secs => %s) END)"
            " ON CONFLICT (holder) DO UPDATE SET resource_types = excluded.resource_types,"
            " as_of = excluded.as_of, expires_at = excluded.expires_at",
            [holder, purpose, types, as_of, lapsed, settings.SNAPSHOT_HOLD_SECONDS],
        )


def _lock_exclusive(types: list[str]) -> None:
    """The types' locks for this transaction, in name order (two holds taken at once cannot deadlock); they
    wait only for expunging transactions, which never wait for them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(t)) FROM unnest(%s::text[]) AS u(t)", [LOCK_SPACE, types]
        )
