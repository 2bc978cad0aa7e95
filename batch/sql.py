"""The engine's hand-written SQL, in one place (as procrastinate's `sql/queries.sql`), each statement with why.

The engine writes SQL where the ORM would cost a round trip or cannot say it: the hot path (claim, emitted
chunks, completion, lease renewal) and the guarded updates and cluster-wide reads of maintenance. Everything
else goes through the ORM. Table names come from the models (`_meta.db_table`). The modules that run a
statement import it from here and say what its parameters are.
"""

from __future__ import annotations

from batch.models import (
    JobInstance,
    JobReassignment,
    MaintenanceLease,
    MaintenancePass,
    WorkChunk,
    WorkerHeartbeat,
)

JOBS = JobInstance._meta.db_table
CHUNKS = WorkChunk._meta.db_table
HEARTBEATS = WorkerHeartbeat._meta.db_table
REASSIGNMENTS = JobReassignment._meta.db_table
MAINTENANCE_PASS = MaintenancePass._meta.db_table
MAINTENANCE_LEASE = MaintenanceLease._meta.db_table

# --- The database's clock --------------------------------------------------------------------------------
DATABASE_NOW = "SELECT now()"
DATABASE_NOW_AND_START = "SELECT now(), pg_postmaster_start_time()"  # a lease renewed before the start lapsed
CURRENT_MINUTE = "SELECT date_trunc('minute', now())"

# The worker's hot statements (claim, emitted chunks, completion) commit without waiting for the WAL
# flush to disk: on a shared disk that wait is most of a chunk's cost. A PostgreSQL crash (not a worker
# crash) can then lose the last fraction of a second of them, always as a suffix, which looks exactly
# like a worker that died at that point: those chunks are claimed and run again, as after any crash.
RELAXED_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true))"

# --- Claim and completion (batch.worker) -----------------------------------------------------------------
# The claim, as one statement: lock the chunk row unless another worker holds it (SKIP LOCKED), check
# that it is claimable and that its job runs and is not cancelled, move it to IN_PROGRESS with a lease.
# An ERRORED chunk is claimable only once its retry is due by the database's clock (`announced_at`, set to
# now() + backoff when it errored): a duplicate message, or one a host with a wrong clock delivered early,
# finds nothing to claim, and maintenance sends the retry again once it is due (`batch.maintenance`).
# (Two common table expressions, so the completion of the chunk before can claim in the same statement.)
CLAIM_CTES = f"""
claimable AS (
    SELECT chunk.id FROM {CHUNKS} chunk JOIN {JOBS} job ON job.id = chunk.instance_id
    WHERE chunk.id = %(claim_id)s AND chunk.status = ANY(%(claimable)s)
      AND (chunk.status <> %(errored)s OR chunk.announced_at IS NULL OR chunk.announced_at <= now())
      AND NOT job.cancelled AND job.status = ANY(%(running)s)
    FOR UPDATE OF chunk SKIP LOCKED
), claimed AS (
    UPDATE {CHUNKS} chunk
    SET status = %(in_progress)s, attempts = chunk.attempts + 1, claim_token = gen_random_uuid(), start_time = COALESCE(chunk.start_time, now()),
        lease_expires_at = now() + %(lease)s, worker = %(worker)s, task_id = %(task_id)s, update_time = now()
    FROM claimable, {JOBS} job, {RELAXED_COMMIT} AS relaxed
    WHERE chunk.id = claimable.id AND job.id = chunk.instance_id
    RETURNING chunk.claim_token, chunk.target_step_id, chunk.data::text, chunk.attempts, chunk.error_count, chunk.poll_attempts,
              chunk.sequence, job.id, job.definition_id, job.definition_version, job.status, job.parameters::text,
              job.node_id, job.module_id, job.max_concurrent_chunks,
              EXTRACT(EPOCH FROM now() - chunk.announced_at)::float8 AS waited_seconds
)"""
CLAIM = f"WITH {CLAIM_CTES} SELECT * FROM claimed"


def _complete(gated: bool) -> str:
    same_step = "AND other.target_step_id = %(step_id)s" if gated else ""
    return f"""
UPDATE {CHUNKS}
SET status = %(completed)s, update_time = now(), end_time = now(), records_processed = %(records)s,
    data = NULL, lease_expires_at = NULL, warning_message = %(warnings)s
FROM {RELAXED_COMMIT} AS relaxed
WHERE id = %(chunk_id)s AND status = %(in_progress)s AND claim_token = %(claim_token)s
RETURNING (SELECT count(*) FROM (
    SELECT 1 FROM {CHUNKS} other
    WHERE other.instance_id = %(instance_id)s AND NOT other.status = 'COMPLETED' AND other.id <> %(chunk_id)s
    {same_step} LIMIT %(limit)s) others),
    (SELECT job.status FROM {JOBS} job WHERE job.id = %(instance_id)s)
"""


# Completion, as one statement: COMPLETED while this claim still owns the chunk, and in the same round
# trip, how many other chunks of its step (gated) or job its snapshot shows unfinished (up to a limit);
# with a next chunk, that chunk's claim too (a round trip per chunk saved: the hot path's largest cost).
# Both updates see the same snapshot and touch different rows; the result is one row whatever each found.
# Keyed by the definition's `gated`.
COMPLETE = {gated: _complete(gated) for gated in (False, True)}
COMPLETE_AND_CLAIM = {
    gated: f"""
WITH completed(unfinished, job_status) AS ({COMPLETE[gated]}), {CLAIM_CTES}
SELECT completed.*, claimed.* FROM (VALUES (1)) AS one LEFT JOIN completed ON true LEFT JOIN claimed ON true
"""
    for gated in (False, True)
}

# --- Emitted chunks (batch.sink) -------------------------------------------------------------------------
# Emitted chunks, written in one statement per batch: arrays of ids, sequences and JSON documents
# instead of one parameter per column per row. Ids already present (a re-run re-emitting) are skipped.
# Fenced like every outcome: written only while the source chunk is IN_PROGRESS under this claim's token,
# so a worker past its lease (a zombie) cannot add children; the share lock on the source row makes a
# lease expiry or a cancel wait for this batch's commit instead of racing it.
INSERT_CHUNKS = f"""
WITH source AS (
    SELECT 1 FROM {CHUNKS} WHERE id = %(source_id)s AND status = %(in_progress)s AND claim_token = %(claim_token)s
    FOR SHARE
), inserted AS (
    INSERT INTO {CHUNKS} (id, instance_id, definition_id, definition_version, target_step_id, sequence, status,
                                 data, error_count, poll_attempts, attempts, create_time, update_time, worker, task_id)
    SELECT emitted.id, %(instance_id)s, %(definition_id)s, %(definition_version)s, %(step_id)s, emitted.sequence,
           %(status)s, emitted.data::jsonb, 0, 0, 0, now(), now(), '', ''
    FROM unnest(%(ids)s::uuid[], %(sequences)s::int[], %(documents)s::text[]) AS emitted(id, sequence, data),
         {RELAXED_COMMIT} AS relaxed
    WHERE EXISTS (SELECT 1 FROM source)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM source), ARRAY(SELECT id FROM inserted)
"""


# --- Status changes (batch.transitions, batch.flow) ------------------------------------------------------
def update_owned_chunk(assignments: str) -> str:
    """IN_PROGRESS → `%s` while the claim that drew the token owns the chunk; `assignments` is `, column = %s…`.
    Parameters: the target status, the assigned values, the chunk id, IN_PROGRESS, the claim token."""
    return (
        f"UPDATE {CHUNKS} SET status = %s, update_time = now(){assignments} "
        "WHERE id = %s AND status = %s AND claim_token = %s"
    )


def update_listed_chunks(assignments: str) -> str:
    """The listed chunks (an array of ids) in one of the statuses given (an array) → `%s`, as
    `update_owned_chunk`; returns the id and target step of each moved."""
    return (
        f"UPDATE {CHUNKS} SET status = %s, update_time = now(){assignments} "
        "WHERE id = ANY(%s::uuid[]) AND status = ANY(%s) RETURNING id, target_step_id"
    )


# Any chunk of the job (of one step: the second form) not COMPLETED? Answered from the partial index of
# unfinished chunks.
UNFINISHED_CHUNKS_EXIST = f"SELECT EXISTS (SELECT 1 FROM {CHUNKS} WHERE instance_id = %s AND NOT status = 'COMPLETED')"
UNFINISHED_CHUNKS_OF_STEP_EXIST = (
    f"SELECT EXISTS (SELECT 1 FROM {CHUNKS} WHERE instance_id = %s AND NOT status = 'COMPLETED'"
    " AND target_step_id = %s)"
)

# --- Leases (batch.leases, batch.recycling) ---------------------------------------------------------------
# Renewed only while the claim owns the chunk and the job is not cancelled: a cancelled job's step that
# ignores the cancel lets its lease lapse instead of holding a worker slot forever. A renewal after the step
# reported progress stamps `progress_at` (database time, at most a renewal interval after the report).
RENEW_CHUNK_LEASE = f"""
UPDATE {CHUNKS} chunk SET lease_expires_at = now() + %s, update_time = now(),
    progress_at = CASE WHEN %s THEN now() ELSE chunk.progress_at END
WHERE chunk.id = %s AND chunk.status = %s AND chunk.claim_token = %s
  AND NOT EXISTS (SELECT 1 FROM {JOBS} job WHERE job.id = chunk.instance_id AND job.cancelled)
"""

# The chunks this worker's pool processes hold, and the database's clock. The partial index on the leases of
# IN_PROGRESS chunks holds these rows only (a few per worker process).
HELD_CHUNKS = f"""
SELECT chunk.id, chunk.claim_token, chunk.worker, chunk.definition_id, chunk.definition_version, chunk.progress_at,
       now()
FROM {CHUNKS} chunk
WHERE chunk.status = %s AND chunk.lease_expires_at IS NOT NULL AND chunk.worker LIKE %s
"""

# --- Workers and nodes (batch.heartbeats, batch.nodes) ---------------------------------------------------
HEARTBEAT = f"""
INSERT INTO {HEARTBEATS} (worker, node_id, module_id, started_at, last_seen, stopped_at, settings_fingerprint)
VALUES (%(worker)s, %(node_id)s, %(module_id)s, now(), now(), NULL, %(fingerprint)s)
ON CONFLICT (worker) DO UPDATE
SET node_id = EXCLUDED.node_id, module_id = EXCLUDED.module_id, last_seen = now(), stopped_at = NULL,
    settings_fingerprint = EXCLUDED.settings_fingerprint
"""

# This process's node if one of its batch workers of the module is live, else the live node of the module
# with the fewest unfinished jobs (then by id, deterministic); liveness as `live_nodes`, on PostgreSQL's clock.
NODE_FOR_NEW_JOB = f"""
SELECT seen.node_id FROM {HEARTBEATS} seen
WHERE seen.module_id = %(module)s AND seen.stopped_at IS NULL AND seen.last_seen > now() - %(timeout)s
GROUP BY seen.node_id
ORDER BY seen.node_id <> %(own)s,
         (SELECT count(*) FROM {JOBS} job WHERE job.node_id = seen.node_id
            AND job.module_id = %(module)s AND job.status = ANY(%(unfinished)s)),
         seen.node_id
LIMIT 1
"""

# Unfinished jobs older than the timeout on a node/module none of whose workers beat within it, of a
# module some other node has live workers of (so jobs that cannot move never crowd out those that can),
# but for a job an operator last forced to its node while it had no live worker: it waits there, as the
# operator said, until that node's workers have beaten after the move (a node about to come up is not
# dead); from then on the node is judged like any other.
# Every comparison is on PostgreSQL's clock, `create_time` included (the database stamps it at the insert, not
# the starting host); every time `batch.nodes` stamps (a move's update time, a re-announcement) is PostgreSQL's too.
STRANDED_JOBS = f"""
SELECT job.id, job.node_id, job.module_id FROM {JOBS} job
WHERE job.status = ANY(%(unfinished)s) AND job.create_time < now() - %(timeout)s
  AND NOT EXISTS (SELECT 1 FROM {HEARTBEATS} seen
                  WHERE seen.node_id = job.node_id AND seen.module_id = job.module_id
                    AND seen.last_seen > now() - %(timeout)s)
  AND EXISTS (SELECT 1 FROM {HEARTBEATS} live
              WHERE live.module_id = job.module_id AND live.stopped_at IS NULL
                AND live.last_seen > now() - %(timeout)s)
  AND NOT EXISTS (SELECT 1 FROM (SELECT latest.forced, latest.to_node_id, latest.at FROM {REASSIGNMENTS} latest
                                 WHERE latest.instance_id = job.id ORDER BY latest.at DESC, latest.id DESC LIMIT 1) latest
                  WHERE latest.forced AND latest.to_node_id = job.node_id
                    AND NOT EXISTS (SELECT 1 FROM {HEARTBEATS} came
                                    WHERE came.node_id = job.node_id AND came.module_id = job.module_id
                                      AND came.last_seen > latest.at))
ORDER BY job.create_time, job.id
LIMIT %(limit)s
"""

# --- Maintenance (batch.maintenance, batch.maintenance_lease, batch.maintenance_watchdog) ----------------
# The one-row lease of the maintenance pass: taken when free or lapsed, renewed while held, given back.
TAKE_MAINTENANCE_LEASE = f"""
INSERT INTO {MAINTENANCE_LEASE} AS lease (id, holder, token, expires_at)
VALUES (1, %(holder)s, %(token)s, clock_timestamp() + %(lease)s)
ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at
WHERE lease.expires_at < clock_timestamp()
RETURNING id
"""
RENEW_MAINTENANCE_LEASE = f"""
UPDATE {MAINTENANCE_LEASE} SET expires_at = clock_timestamp() + %(lease)s
WHERE id = 1 AND token = %(token)s AND expires_at >= clock_timestamp()
"""
# Given back: free at once, and no holder named, so the next taker can tell a release from a lapse.
RELEASE_MAINTENANCE_LEASE = f"""
UPDATE {MAINTENANCE_LEASE} SET holder = '', expires_at = clock_timestamp() WHERE id = 1 AND token = %(token)s
"""
LAPSED_MAINTENANCE_LEASE = f"""
SELECT holder, EXTRACT(EPOCH FROM clock_timestamp() - expires_at)::float FROM {MAINTENANCE_LEASE}
WHERE id = 1 AND holder <> '' AND expires_at < clock_timestamp()
"""

# The one-row mark of the last pass that ended, for the workers' watchdogs and the "maintenance is late" line.
RECORD_PASS_ENDED = (
    f"INSERT INTO {MAINTENANCE_PASS} (id, ended_at) VALUES (1, now()) "
    "ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at"
)
SECONDS_SINCE_LAST_PASS = f"SELECT EXTRACT(EPOCH FROM now() - ended_at)::float FROM {MAINTENANCE_PASS} WHERE id = 1"
MAINTENANCE_OVERDUE = f"""
SELECT NOT EXISTS (SELECT 1 FROM {MAINTENANCE_PASS} WHERE id = 1 AND ended_at >= now() - %s)
"""

# --- The dashboard (batch.dashboard) ---------------------------------------------------------------------
# Chunks and records completed per minute since a minute, by definition and step.
COMPLETED_PER_MINUTE = f"""
SELECT date_trunc('minute', end_time), definition_id, definition_version, target_step_id, count(*),
       coalesce(sum(records_processed), 0)
FROM {CHUNKS}
WHERE status = %s AND end_time >= %s
GROUP BY 1, 2, 3, 4
"""
