"""Acceptance under faults: PostgreSQL restarted or killed, Redis killed and back empty, a chunk that hangs.

A small cluster of its own (a batch worker, the scheduler worker and beat running maintenance) on a
PostgreSQL and a Redis this module can break (tests/faults.py), so the shared services stay untouched.
Nothing is restarted by hand: each test breaks something mid-job and waits for the job to complete.
Every execution of a chunk is written down by the step itself, so "counted exactly once" is checked
against what ran, not only against statuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.faults import RestartablePostgres, RestartableRedis
from tests.processes import (
    PROJECT_DIR,
    Process,
    celery_beat,
    celery_worker,
    scheduler_worker,
    wait_until,
    wait_until_beating,
    wait_until_ready,
)

pytestmark = [pytest.mark.acceptance, pytest.mark.serial]

MAX_CHUNK_SECONDS = 5
HELD_FROM = 2  # chunks before this index run freely, so "midway" means some done and some in flight
LEASE_SECONDS = 20  # outlives an outage plus PostgreSQL's crash recovery on a busy machine
DATABASE_LOST = "the database connection was lost"  # batch.connections, when a worker meets an outage
MOVING_ON_FAILED = (
    "moving the job on failed"  # batch.worker, when the outage meets a gate opening (maintenance opens it)
)
EMITTED = (
    600  # chunks the first step emits in the emission tests: one mid-step batch of 500 (batch.sink), then the rest
)
PAUSE_LOCK = 0x66617573  # the advisory lock a paused commit waits for (see `paused_at_commit`)
BROKER_LOST = "Connection to broker lost"  # Celery's consumer, when Redis goes away


class Cluster:
    def __init__(self, postgres: RestartablePostgres, redis: RestartableRedis, database_url: str, env: dict):
        self.postgres, self.redis, self.database_url, self.env = postgres, redis, database_url, env
        self.processes: list[Process] = []

    def run_manage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_DIR,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=False,
        )

    def manage(self, *args: str) -> str:
        done = self.run_manage(*args)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def start_job(self, definition_id: str, parameters: dict) -> str:
        return self.manage("start_job", definition_id, "--params", json.dumps(parameters)).strip().splitlines()[-1]

    def query(self, sql: str, *params) -> list[dict]:
        with psycopg.connect(self.database_url, row_factory=dict_row) as connection:
            return connection.execute(sql, params).fetchall()

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            connection.execute(sql)

    def job(self, job_id: str) -> dict:
        return self.query("SELECT * FROM batch_jobinstance WHERE id = %s", job_id)[0]

    def chunks(self, job_id: str, step_id: str) -> list[dict]:
        return self.query(
            "SELECT * FROM batch_workchunk WHERE instance_id = %s AND target_step_id = %s", job_id, step_id
        )

    def wait_for(self, condition, timeout: float, what: str):
        """Polls `condition` (which may query the database: errors while it is down count as "not yet")."""

        def answered():
            try:
                return condition()
            except psycopg.OperationalError:
                return None

        return wait_until(answered, timeout, message=lambda: f"{what}\n{self.logs()}")

    def logs(self) -> str:
        tails = []
        for process in self.processes:
            try:
                tails.append(f"--- {process.name}\n{process.output()[-4000:]}")
            except OSError as error:
                tails.append(f"--- {process.name}: {error}")
        return "\n".join(tails)

    def wait_until_ended(self, job_id: str, timeout: float = 90) -> dict:
        return self.wait_for(
            lambda: (job := self.job(job_id))["status"] in ("COMPLETED", "FAILED", "CANCELLED") and job,
            timeout,
            f"job {job_id} ending",
        )


@pytest.fixture(scope="module")
def cluster(django_db_blocker):
    """PostgreSQL + Redis of its own, migrated, with one batch worker (2 processes), a scheduler worker and beat."""
    postgres, redis = RestartablePostgres(), RestartableRedis()
    processes: list[Process] = []
    try:
        postgres.start()
        redis.start()
        database_url = postgres.create_database("faults")
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis.url,
            "NODE_ID": f"faults{uuid.uuid4().hex[:8]}",
            "DJANGO_SETTINGS_MODULE": "tests.batch.worker_settings",
            "SCHEDULER_QUEUE": f"sched{uuid.uuid4().hex[:8]}",
            "SCHEDULER_THREAD_COUNT": "2",
            "BATCH_MAINTENANCE_INTERVAL_SECONDS": "2",
            "BATCH_LEASE_SECONDS": str(LEASE_SECONDS),
            "BATCH_REANNOUNCE_AFTER_SECONDS": "4",
            "BATCH_MAX_CHUNK_SECONDS": str(MAX_CHUNK_SECONDS),
            "BATCH_DIAGNOSTIC_JOBS": "true",
        }
        made = Cluster(postgres, redis, database_url, env)
        made.manage("migrate", "--noinput")
        with django_db_blocker.unblock():
            processes.append(celery_worker(env=env, concurrency=2, name="faults-worker"))
            scheduler, beat = scheduler_worker(env, name="faults-scheduler"), celery_beat(env, name="faults-beat")
            processes += [scheduler, beat]
            wait_until_ready(scheduler)
            wait_until_beating(beat)
        made.processes = processes
        yield made
    finally:
        for process in reversed(processes):
            process.stop()
        redis.destroy()
        postgres.destroy()


def executions(log: Path) -> Counter:
    return Counter(int(line) for line in log.read_text().split()) if log.exists() else Counter()


def start_logged_job(
    cluster: Cluster, log: Path, chunks: int = 12, sleep_ms: int = 700, hold: Path | None = None
) -> str:
    """`hold`: while that file exists, chunks from HELD_FROM on wait once started (see `wait_until_midway`)."""
    held = {"hold_while": str(hold), "hold_from": HELD_FROM} if hold is not None else {}
    return cluster.start_job("TEST_LOGGED", {"chunks": chunks, "sleep_ms": sleep_ms, "log": str(log), **held})


def wait_until_midway(cluster: Cluster, job_id: str, log: Path) -> None:
    """Some chunks done, some running: the moment to break something. The job was started with a hold, so it
    cannot end before the test has seen this, however slow the machine (the test releases the hold once the
    fault is in)."""
    cluster.wait_for(
        lambda: executions(log) and any(chunk["status"] == "IN_PROGRESS" for chunk in cluster.chunks(job_id, "log")),
        timeout=120,
        what="the job midway",
    )


def assert_each_chunk_counted_once(
    cluster: Cluster,
    job_id: str,
    log: Path,
    chunks: int,
    crash: bool = False,
    errors_before: Mapping[uuid.UUID, int] | None = None,
) -> None:
    """`crash`: PostgreSQL was SIGKILLed. The hot statements commit without waiting for the WAL flush
    (docs/batch.md), so a crash may lose the last fraction of a second of claims: those chunks run once
    more than their recorded claims, and lost outcomes leave a lapsed lease ("Worker lost"), exactly as after a
    worker crash; their results still count once. `errors_before`: errors the test gave chunks itself, by id."""
    job = cluster.wait_until_ended(job_id)
    rows = cluster.chunks(job_id, "log")
    ran = executions(log)
    assert job["status"] == "COMPLETED", job["error_message"]
    assert job["combined_records_processed"] == chunks
    assert sorted(ran) == list(range(chunks))  # every chunk ran...
    by_index = {row["sequence"]: row for row in rows}
    assert all(row["status"] == "COMPLETED" and row["records_processed"] == 1 for row in rows)
    every_chunk = cluster.query("SELECT * FROM batch_workchunk WHERE instance_id = %s", job_id)
    charged = [
        row["error_message"]
        for row in every_chunk  # the emitting steps' too
        if row["error_count"] > (errors_before or {}).get(row["id"], 0)
    ]
    if crash:  # what the crash lost looks like a lost worker, and only that
        charged = [message for message in charged if not message.startswith("Worker lost:")]
    assert charged == []  # an outage is no chunk's fault
    # ...and ran again only where an attempt was cut off (each execution is a claim of its own)
    lost_claims = 1 if crash else 0
    assert all(ran[index] <= by_index[index]["attempts"] + lost_claims for index in ran), (
        ran,
        {index: row["attempts"] for index, row in by_index.items()},
    )


@pytest.mark.parametrize("outage", ["fast-shutdown", "postmaster-sigkill"])
def test_a_job_completes_after_postgresql_goes_away_mid_job(cluster, tmp_path, outage):
    log, hold = tmp_path / "ran", tmp_path / "hold"
    hold.touch()
    job_id = start_logged_job(cluster, log, hold=hold)
    wait_until_midway(cluster, job_id, log)

    worker = cluster.processes[0]
    met_before = worker.output().count(DATABASE_LOST)
    if outage == "fast-shutdown":
        cluster.postgres.stop_fast()
    else:
        cluster.postgres.kill_postmaster()
    hold.unlink()  # the held chunks go on and meet the outage when they record their outcome
    # The database stays away until a worker, finishing a step, has found it gone; well inside the lease, so
    # no chunk looks abandoned (a longer outage is another test's matter).
    cluster.wait_for(
        lambda: worker.output().count(DATABASE_LOST) > met_before,
        timeout=LEASE_SECONDS / 2,
        what="the batch worker meeting the outage",
    )
    cluster.postgres.start()

    assert_each_chunk_counted_once(cluster, job_id, log, chunks=12, crash=outage == "postmaster-sigkill")


def test_start_job_during_an_outage_says_so_in_one_line_and_workers_on_dead_connections_run_the_next_job(
    cluster, tmp_path
):
    log = tmp_path / "ran"
    job_id = start_logged_job(cluster, log, chunks=4, sleep_ms=100)
    cluster.wait_until_ended(job_id)  # the worker's pool processes now hold connections
    worker = cluster.processes[0]
    met_before = worker.output().count(DATABASE_LOST)
    cluster.postgres.stop_fast()  # every connection the workers hold is dead from here on

    refused = cluster.run_manage("start_job", "TEST_LOGGED", "--params", json.dumps({"log": str(log)}))
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()], refused.stderr  # one line
    assert "no job started: the database is unavailable" in refused.stderr and "Traceback" not in refused.stderr

    cluster.postgres.start()
    second = start_logged_job(cluster, tmp_path / "second", chunks=6, sleep_ms=100)

    assert_each_chunk_counted_once(cluster, second, tmp_path / "second", chunks=6)
    assert worker.output().count(DATABASE_LOST) > met_before  # its claims met the dead connections and rode them out


def test_a_job_completes_after_redis_is_killed_and_comes_back_empty(cluster, tmp_path):
    log, hold = tmp_path / "ran", tmp_path / "hold"
    hold.touch()
    job_id = start_logged_job(cluster, log, hold=hold)
    wait_until_midway(cluster, job_id, log)

    worker = cluster.processes[0]
    lost_before = worker.output().count(BROKER_LOST)
    cluster.redis.kill()  # the queued announcements and the unacknowledged messages are gone
    hold.unlink()  # the chunks in flight go on while Redis is away
    cluster.wait_for(
        lambda: worker.output().count(BROKER_LOST) > lost_before,
        timeout=60,
        what="the batch worker noticing Redis gone",
    )  # so it must reconnect, not just carry on
    cluster.redis.start()

    assert_each_chunk_counted_once(cluster, job_id, log, chunks=12)


def test_a_chunk_that_hangs_is_errored_after_the_maximum_run_time_and_retried(cluster):
    job_id = cluster.start_job(
        "DIAGNOSTIC_NOOP", {"chunks": 8, "sleep_ms": 50, "records_per_chunk": 3, "hang_at_chunk": 2}
    )

    job = cluster.wait_until_ended(job_id, timeout=120)

    assert job["status"] == "COMPLETED", job["error_message"]
    assert job["combined_records_processed"] == 8 * 3
    hung = next(chunk for chunk in cluster.chunks(job_id, "sleep") if chunk["sequence"] == 2)
    assert hung["attempts"] == 2 and hung["error_count"] == 1
    assert f"{MAX_CHUNK_SECONDS} s" in hung["error_message"]
    worker = cluster.processes[0]
    cluster.wait_for(
        lambda: "did not stop: recycling this process" in worker.output(), timeout=30, what="the hung process recycled"
    )


def test_a_worker_whose_clock_is_30_s_behind_charges_no_healthy_chunk_an_error(cluster, tmp_path):
    """Leases are written and judged by PostgreSQL's clock: a host clock 30 s behind (a lease of 20 s would look
    expired at once to the maintenance of another host) changes nothing."""
    skewed = celery_worker(
        env={
            **cluster.env,
            "DJANGO_SETTINGS_MODULE": "tests.batch.skewed_clock_settings",
            "CLOCK_OFFSET_SECONDS": "-30",
        },
        concurrency=2,
        name="skewed",
    )
    try:
        log, hold = tmp_path / "ran", tmp_path / "hold"
        hold.touch()  # chunks from HELD_FROM on wait: the skewed worker holds one until a pass has judged its lease
        job_id = start_logged_job(cluster, log, chunks=8, sleep_ms=100, hold=hold)
        passes_ended = set()  # when each maintenance pass seen meanwhile ended (PostgreSQL's clock)

        def judged_while_skewed_holds() -> bool:
            passes_ended.update(row["ended_at"] for row in cluster.query("SELECT ended_at FROM batch_maintenancepass"))
            held = [
                row["start_time"]
                for row in cluster.chunks(job_id, "log")
                if row["status"] == "IN_PROGRESS" and row["worker"].startswith("skewed-")
            ]
            return any(start < pass_ended for start in held for pass_ended in passes_ended)

        # Waited for, not hoped for with long chunks: on a loaded machine beat's passes may come late.
        cluster.wait_for(judged_while_skewed_holds, timeout=120, what="a maintenance pass while skewed holds a chunk")
        hold.unlink()

        assert_each_chunk_counted_once(cluster, job_id, log, chunks=8)
        held_by_skewed = [
            (row["start_time"], row["end_time"])
            for row in cluster.chunks(job_id, "log")
            if row["worker"].startswith("skewed-")
        ]
        assert held_by_skewed
        assert any(start < pass_ended < end for start, end in held_by_skewed for pass_ended in passes_ended), (
            "no maintenance pass judged the leases while the skewed worker held a chunk: the test proved nothing"
        )
    finally:
        skewed.stop()


@contextmanager
def paused_at_commit(cluster: Cluster, table: str, event: str, condition: str) -> Iterator[Callable[[], None]]:
    """Until the database stops, a transaction that does `event` on a `table` row matching `condition` waits
    at its COMMIT (a deferred constraint trigger takes an advisory lock this test holds): the outage then
    meets the engine after its statements ran and before they committed, the moment a rolled-back write
    can be mistaken for a done one. Yields a function that waits until a transaction is held there."""
    cluster.execute(f"""
        CREATE OR REPLACE FUNCTION faults_pause() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_advisory_xact_lock_shared({PAUSE_LOCK}); RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER faults_pause AFTER {event} ON {table} DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW WHEN ({condition}) EXECUTE FUNCTION faults_pause();
    """)
    holder = psycopg.connect(cluster.database_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", [PAUSE_LOCK])  # released when the database stops

    def wait_until_held() -> None:
        cluster.wait_for(
            lambda: cluster.query(
                "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = %s", PAUSE_LOCK
            ),
            timeout=120,
            what=f"a transaction paused at its commit ({event} on {table} where {condition})",
        )

    try:
        yield wait_until_held
    finally:
        holder.close()
        if not cluster.postgres.is_up():  # the test failed during the outage
            cluster.postgres.start()
        cluster.execute(f"DROP TRIGGER IF EXISTS faults_pause ON {table}")


# Where the commit waits, for each moment a step's emitted chunks are saved: (job, table, event, condition).
SAVING_EMITTED_CHUNKS = {
    "a mid-step batch": ("TEST_LOGGED", "batch_workchunk", "INSERT", "NEW.target_step_id = 'log' AND NEW.sequence = 0"),
    "the last batch with the completion": (
        "TEST_LOGGED",
        "batch_workchunk",
        "INSERT",
        f"NEW.target_step_id = 'log' AND NEW.sequence = {EMITTED - 1}",
    ),
    "a gated middle step's chunk for the reduction": (
        "TEST_LOGGED_GATED",
        "batch_workchunk",
        "INSERT",
        "NEW.target_step_id = 'sum'",
    ),
    "the gate opening": (
        "TEST_LOGGED_GATED",
        "batch_jobinstance",
        "UPDATE",
        "OLD.current_gated_step_id = 'emit' AND NEW.current_gated_step_id = 'log'",
    ),
}


def assert_completed_with_every_emitted_chunk(cluster: Cluster, definition_id: str, job_id: str, log: Path) -> None:
    assert_each_chunk_counted_once(cluster, job_id, log, chunks=EMITTED)
    if definition_id == "TEST_LOGGED_GATED":
        assert cluster.job(job_id)["report"] == {"chunks": EMITTED, "records": EMITTED}


@pytest.mark.parametrize("moment", SAVING_EMITTED_CHUNKS)
def test_no_emitted_chunk_is_lost_when_postgresql_restarts_while_they_are_saved(cluster, tmp_path, moment):
    definition_id, table, event, condition = SAVING_EMITTED_CHUNKS[moment]
    log = tmp_path / "ran"
    worker = cluster.processes[0]
    with paused_at_commit(cluster, table, event, condition) as wait_until_held:
        job_id = cluster.start_job(definition_id, {"chunks": EMITTED, "log": str(log)})
        wait_until_held()
        met_before = worker.output().count(DATABASE_LOST) + worker.output().count(MOVING_ON_FAILED)
        cluster.postgres.stop_fast()  # the paused commit fails: its transaction is rolled back
        cluster.wait_for(
            lambda: worker.output().count(DATABASE_LOST) + worker.output().count(MOVING_ON_FAILED) > met_before,
            timeout=LEASE_SECONDS / 2,
            what="the batch worker meeting the outage at the paused commit",
        )
        cluster.postgres.start()

    assert_completed_with_every_emitted_chunk(cluster, definition_id, job_id, log)


def test_a_reduction_cut_off_by_a_postgresql_restart_runs_again_and_counts_every_input(cluster, tmp_path):
    log, hold = tmp_path / "ran", tmp_path / "hold"
    hold.touch()
    job_id = cluster.start_job(
        "TEST_LOGGED_GATED", {"chunks": EMITTED, "log": str(log), "hold_reduction_while": str(hold)}
    )
    cluster.wait_for(lambda: Path(f"{hold}.reached").exists(), timeout=120, what="the reduction reading its inputs")
    worker = cluster.processes[0]
    met_before = worker.output().count(DATABASE_LOST)
    cluster.postgres.stop_fast()
    hold.unlink()  # the reduction reads its next page of inputs (of more than 500) from a database that is away
    cluster.wait_for(
        lambda: worker.output().count(DATABASE_LOST) > met_before,
        timeout=LEASE_SECONDS / 2,
        what="the reduction meeting the outage",
    )
    cluster.postgres.start()

    assert_completed_with_every_emitted_chunk(cluster, "TEST_LOGGED_GATED", job_id, log)


def test_a_crash_that_loses_a_chunks_completion_charges_no_error_and_fails_no_job(cluster, tmp_path):
    """With fsync on and the WAL writer slowed to 10 s, SIGKILLing every PostgreSQL process really loses the
    completion of a chunk on its last retry (the worker's hot statements commit asynchronously): its lease,
    last renewed before the database restarted, lapses, and the retry is free (docs/batch.md, *Faults*)."""
    postgres = cluster.postgres
    postgres.stop_fast()
    postgres.start(fsync="on", wal_writer_delay="10s")
    try:
        log, hold = tmp_path / "ran", tmp_path / "hold"
        hold.touch()  # chunks 0 and 1 run, the last is held, so the job cannot end (and commit) meanwhile
        job_id = start_logged_job(cluster, log, chunks=HELD_FROM + 1, sleep_ms=1500, hold=hold)
        first = cluster.wait_for(
            lambda: [
                row for row in cluster.chunks(job_id, "log") if row["sequence"] == 0 and row["status"] == "IN_PROGRESS"
            ],
            timeout=120,
            what="the first chunk running",
        )[0]
        last_retry = 3  # BATCH_MAX_CHUNK_RETRIES: one more error fails the job
        cluster.query("UPDATE batch_workchunk SET error_count = %s WHERE id = %s RETURNING id", last_retry, first["id"])
        postgres.stop_wal_writer()  # from here only a synchronous commit writes the WAL out
        with psycopg.connect(cluster.database_url, autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            # Polled tightly: any synchronous commit (a maintenance pass, a lease renewal) writes the WAL out.
            while (
                watcher.execute("SELECT status FROM batch_workchunk WHERE id = %s", [first["id"]]).fetchone()[0]
                != "COMPLETED"
            ):
                assert time.monotonic() < deadline, f"the first chunk did not complete\n{cluster.logs()}"
                time.sleep(0.005)
            postgres.kill_every_process()  # its completion is committed, but not yet written to the WAL on disk
        postgres.start(fsync="on", wal_writer_delay="10s")
        assert (
            cluster.job(job_id)
            and cluster.query("SELECT status FROM batch_workchunk WHERE id = %s", first["id"])[0]["status"]
            == "IN_PROGRESS"
        ), "the crash lost nothing: this run cannot show what a lost completion does"
        hold.unlink()

        assert_each_chunk_counted_once(
            cluster, job_id, log, chunks=HELD_FROM + 1, crash=True, errors_before={first["id"]: last_retry}
        )
        row = cluster.query("SELECT * FROM batch_workchunk WHERE id = %s", first["id"])[0]
        assert (row["error_count"], row["attempts"]) == (last_retry, 2), "retried once, without an error"
    finally:
        if postgres.is_up():
            postgres.stop_fast()
        postgres.start()
