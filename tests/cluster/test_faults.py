"""Faults of whole machines, on simulated hosts (tests/cluster/hosts.py): issue #22's scenarios.

`w1` and `w2` run a batch worker, beat and the scheduler worker (two scheduling hosts, node `main`); `w3` is a
node of its own (`edge`, a batch worker only), the host that is cut off; `clock` runs nothing until the
scheduling scenario starts a beat and a scheduler worker there, 45 s ahead (libfaketime); `old` (node `main`)
runs nothing until the rolling-upgrade scenario starts the previous release's processes there. PostgreSQL and
Redis run on `db`. Leases, node timeout and client timeouts are short (CLUSTER_SETTINGS), so each fault costs seconds.

Executions are counted, not only statuses: TEST_LOGGED's chunks and tests/cluster/periodic_ticks.py's runs
write each execution to a file that every host sees (outside the per-host data path), and no chunk may have
run more often than it was claimed. Each scenario prints its time to recover (docs/cluster.md,
"Faults measured on the harness").
"""

from __future__ import annotations

import json
import shlex
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest

from tests.cluster.hosts import (
    POSTGRES_PORT,
    REDIS_PORT,
    Cluster,
    Host,
    HostProcess,
    needs_root,
    wait_until_ready,
)
from tests.processes import PROJECT_DIR, wait_until
from tests.scheduling.recorder import RECORD_FILE, read_runs

pytestmark = [needs_root, pytest.mark.acceptance]

LEASE_SECONDS = 6
NODE_TIMEOUT_SECONDS = 8
MAINTENANCE_INTERVAL_SECONDS = 2
CLUSTER_SETTINGS = {
    "DJANGO_SETTINGS_MODULE": "tests.batch.worker_settings",  # the project's, plus TEST_LOGGED
    "SCHEDULING_JOB_MODULES": "tests.cluster.periodic_ticks",
    "SCHEDULER_THREAD_COUNT": "2",
    "BATCH_LEASE_SECONDS": str(LEASE_SECONDS),
    "BATCH_NODE_TIMEOUT_SECONDS": str(NODE_TIMEOUT_SECONDS),
    "BATCH_MAINTENANCE_INTERVAL_SECONDS": str(MAINTENANCE_INTERVAL_SECONDS),
    "BATCH_REANNOUNCE_AFTER_SECONDS": "4",
    # Issue #22's lease and client timeouts, short (a release without them ignores these).
    "BATCH_MAINTENANCE_LEASE_SECONDS": "4",
    "DATABASE_CONNECT_TIMEOUT_SECONDS": "3",
    "DATABASE_KEEPALIVES_IDLE_SECONDS": "2",
    "DATABASE_KEEPALIVES_INTERVAL_SECONDS": "1",
    "DATABASE_KEEPALIVES_COUNT": "2",
    "DATABASE_TCP_USER_TIMEOUT_MS": "4000",
    "REDIS_SOCKET_TIMEOUT_SECONDS": "3",
    "REDIS_SOCKET_CONNECT_TIMEOUT_SECONDS": "2",
    "REDIS_HEALTH_CHECK_INTERVAL_SECONDS": "2",
}
ROLES = {"w1": ("worker", "beat", "scheduler"), "w2": ("worker", "beat", "scheduler"), "w3": ("worker",)}
NODES = {"w1": "main", "w2": "main", "w3": "edge", "clock": "clock", "old": "main"}
HELD_FROM = 2  # TEST_LOGGED chunks from this index on wait while the hold file exists: the job is midway
RECOVERY_SLACK = 8  # seconds beyond a timeout that a loaded 2-core machine may take to act on it
JOB_TIMEOUT = 120
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")  # Debian's `faketime`, threads too
SKEW = "+45s"
TICKING = "tests.cluster.periodic_ticks.every_three_seconds"
LONG_RUNNER = "tests.cluster.periodic_ticks.runs_nine_seconds"
TICK_PERIOD = timedelta(seconds=3)


@pytest.fixture(scope="module")
def cluster(empty_cluster: Cluster) -> Iterator[Cluster]:
    shared = empty_cluster.directory / "shared"  # the same directory on every host: only the data path differs
    shared.mkdir(mode=0o755)
    empty_cluster.settings.update({**CLUSTER_SETTINGS, RECORD_FILE: str(shared / "runs.jsonl")})
    for name, node in NODES.items():
        empty_cluster.add_host(name, NODE_ID=node)
    wait_until_ready([empty_cluster.hosts[name].start(entry) for name, entries in ROLES.items() for entry in entries])
    yield empty_cluster


@pytest.fixture
def shared(cluster: Cluster, request) -> Path:
    """A directory of the test's own that every host sees."""
    directory = cluster.directory / "shared" / request.node.name.replace("[", "-").rstrip("]")
    directory.mkdir(mode=0o755)
    return directory


def database_now(cluster: Cluster) -> datetime:
    return cluster.sql("SELECT clock_timestamp()")[0][0]


def seconds_since(cluster: Cluster, moment: datetime) -> float:
    return round((database_now(cluster) - moment).total_seconds(), 1)


def start_logged_job(host: Host, log: Path, hold: Path, chunks: int, sleep_ms: int) -> str:
    """TEST_LOGGED started by a process of `host`, so on its node; chunks from HELD_FROM on wait for `hold`."""
    parameters = {
        "chunks": chunks,
        "sleep_ms": sleep_ms,
        "log": str(log),
        "hold_while": str(hold),
        "hold_from": HELD_FROM,
    }
    return (
        host.run(["python", "manage.py", "start_job", "TEST_LOGGED", "--params", json.dumps(parameters)])
        .strip()
        .splitlines()[-1]
    )


def executions(log: Path) -> Counter:
    return Counter(int(line) for line in log.read_text().split()) if log.exists() else Counter()


def wait_until_midway(cluster: Cluster, job_id: str, log: Path, on_host: str) -> None:
    """Some chunks ran, and `on_host`'s worker holds some (waiting for the hold file)."""
    held = "SELECT count(*) FROM batch_workchunk WHERE instance_id = %s AND status = 'IN_PROGRESS' AND worker LIKE %s"
    wait_until(
        lambda: executions(log) and cluster.sql(held, [job_id, f"%@worker-{on_host}-%"])[0][0],
        JOB_TIMEOUT,
        message=f"job {job_id} midway, {on_host} holding chunks",
    )


def wait_for_job(cluster: Cluster, job_id: str, timeout: float = JOB_TIMEOUT) -> str:
    return wait_until(
        lambda: (
            (status := cluster.sql("SELECT status FROM batch_jobinstance WHERE id = %s", [job_id])[0][0])
            in ("COMPLETED", "FAILED", "CANCELLED")
            and status
        ),
        timeout,
        message=f"job {job_id} did not end",
    )


def assert_each_chunk_ran_and_counted_once(cluster: Cluster, job_id: str, log: Path, chunks: int) -> None:
    """Every chunk ran and counts once; one ran again only where an attempt of it was cut off (each execution
    is a claim of its own, so never more executions than attempts)."""
    [(status, records, error)] = cluster.sql(
        "SELECT status, combined_records_processed, error_message FROM batch_jobinstance WHERE id = %s", [job_id]
    )
    assert (status, records) == ("COMPLETED", chunks), error
    rows = cluster.sql(
        "SELECT sequence, status, records_processed, attempts FROM batch_workchunk "
        "WHERE instance_id = %s AND target_step_id = 'log'",
        [job_id],
    )
    assert sorted((sequence, status, records) for sequence, status, records, _ in rows) == [
        (index, "COMPLETED", 1) for index in range(chunks)
    ]
    ran = executions(log)
    assert sorted(ran) == list(range(chunks))
    attempts = {sequence: attempts for sequence, _, _, attempts in rows}
    assert all(ran[index] <= attempts[index] for index in ran), (ran, attempts)


def restart(host: Host) -> None:
    """Cable back in (if it was out) and the host's processes started again."""
    host.power_on()
    wait_until_ready([host.start(entry) for entry in ROLES[host.name]])


def report(scenario: str, **figures: float | str | None) -> None:
    print(f"\nFAULT {scenario}: " + ", ".join(f"{name}={value}" for name, value in figures.items()))


# --- 1. A host powered off while it holds the maintenance lock -------------------------------------------------


def maintenance_holder(cluster: Cluster) -> str | None:
    """The host whose maintenance pass holds the cluster's maintenance lease now (its holder is `host:pid:token`)."""
    rows = cluster.sql(
        "SELECT split_part(holder, ':', 1) FROM batch_maintenancelease "
        "WHERE holder <> '' AND expires_at > clock_timestamp()"
    )
    return rows[0][0] if rows else None


def last_pass_ended(cluster: Cluster) -> datetime | None:
    rows = cluster.sql("SELECT ended_at FROM batch_maintenancepass WHERE id = 1")
    return rows[0][0] if rows else None


def test_a_host_powered_off_while_it_holds_the_maintenance_lock_stops_maintenance_only_briefly(cluster, shared):
    """The pass is caught holding the lock: the test holds the row every pass writes last, so a pass that took
    the lock waits there; its host is powered off, the row let go. Another host's pass must follow within the
    node timeout (the lock dies with its holder), and the job, whose chunks the dead host held, complete exact."""
    log, hold = shared / "ran", shared / "hold"
    hold.touch()
    chunks = 24
    job_id = start_logged_job(cluster.hosts["w1"], log, hold, chunks=chunks, sleep_ms=100)
    wait_until_midway(cluster, job_id, log, on_host="w1")
    wait_until(lambda: last_pass_ended(cluster), JOB_TIMEOUT, message="a first maintenance pass")
    with psycopg.connect(cluster.database_url) as blocker:  # a transaction: the row stays locked until rollback
        blocker.execute("SELECT 1 FROM batch_maintenancepass WHERE id = 1 FOR UPDATE")
        holder = cluster.hosts[
            wait_until(lambda: maintenance_holder(cluster), 60, message="a maintenance pass holding the lock")
        ]
        holder.power_off()
        powered_off_at = database_now(cluster)
        hold.unlink()
        blocker.rollback()
    try:
        resumed = wait_until(
            lambda: (ended := last_pass_ended(cluster)) > powered_off_at and ended,
            NODE_TIMEOUT_SECONDS + RECOVERY_SLACK,
            message=(f"no maintenance pass after {holder.name}, which held the lock, was powered off"),
        )
        assert wait_for_job(cluster, job_id) == "COMPLETED"
        report(
            "power-off of the maintenance lock's holder",
            host=holder.name,
            maintenance_resumed_after_s=round((resumed - powered_off_at).total_seconds(), 1),
            job_completed_after_s=seconds_since(cluster, powered_off_at),
        )
        assert_each_chunk_ran_and_counted_once(cluster, job_id, log, chunks)
    finally:
        restart(holder)


# --- 2. A worker host cut off from PostgreSQL, from Redis, from both ------------------------------------------

CUTS = {"postgresql": POSTGRES_PORT, "redis": REDIS_PORT, "both": None}
CUT_SECONDS = NODE_TIMEOUT_SECONDS + LEASE_SECONDS + 4  # longer than the lease and the node timeout


def edge_beat_since(cluster: Cluster, moment: datetime) -> bool:
    return cluster.sql(
        "SELECT EXISTS (SELECT 1 FROM batch_workerheartbeat WHERE node_id = 'edge' "
        "AND stopped_at IS NULL AND last_seen > %s)",
        [moment],
    )[0][0]


def job_node(cluster: Cluster, job_id: str) -> str:
    return cluster.sql("SELECT node_id FROM batch_jobinstance WHERE id = %s", [job_id])[0][0]


@pytest.mark.parametrize("cut", CUTS)
def test_a_worker_host_cut_off_longer_than_the_node_timeout_loses_its_job_to_a_live_node(cluster, shared, cut):
    """`w3`, the only machine of node `edge`, is cut from the database host (one port of it, or all) for longer
    than the lease and the node timeout, mid-job: its node must be found dead and its job re-homed to `main`
    within the node timeout (a host that cannot reach its queue does not do its node's work), the job complete
    exact, and `w3` beat again within seconds of the network's return."""
    w3, db = cluster.hosts["w3"], cluster.database_host
    started = database_now(cluster)
    wait_until(
        lambda: edge_beat_since(cluster, started),
        NODE_TIMEOUT_SECONDS + RECOVERY_SLACK,
        message="w3 beating before the cut",
    )
    log, hold = shared / "ran", shared / "hold"
    hold.touch()
    chunks = 16
    job_id = start_logged_job(w3, log, hold, chunks=chunks, sleep_ms=100)
    assert job_node(cluster, job_id) == "edge"
    wait_until_midway(cluster, job_id, log, on_host="w3")
    w3.cut_from(db, CUTS[cut])
    cut_at = database_now(cluster)
    hold.unlink()
    rehomed_after = None
    try:
        moved = wait_until(
            lambda: job_node(cluster, job_id) != "edge" or seconds_since(cluster, cut_at) > CUT_SECONDS,
            CUT_SECONDS + RECOVERY_SLACK,
        )
        if job_node(cluster, job_id) != "edge":
            rehomed_after = seconds_since(cluster, cut_at)
        wait_until(lambda: seconds_since(cluster, cut_at) >= CUT_SECONDS, CUT_SECONDS + RECOVERY_SLACK)
    finally:
        w3.heal_from(db, CUTS[cut])
    healed_at = database_now(cluster)
    assert wait_for_job(cluster, job_id) == "COMPLETED"
    completed_after_heal = seconds_since(cluster, healed_at)
    back = wait_until(lambda: edge_beat_since(cluster, healed_at), 60, message="w3 beating again after the heal")
    beat_again_after = seconds_since(cluster, healed_at)
    report(
        f"w3 cut from {cut} for {CUT_SECONDS} s",
        rehomed_after_cut_s=rehomed_after,
        job_completed_after_heal_s=max(completed_after_heal, 0),
        w3_beat_again_after_heal_s=beat_again_after,
    )
    assert moved and rehomed_after is not None, f"the job stayed on edge for the whole {CUT_SECONDS} s cut"
    assert rehomed_after <= NODE_TIMEOUT_SECONDS + RECOVERY_SLACK
    assert back and beat_again_after <= RECOVERY_SLACK, "w3 took longer than seconds to recover after the heal"
    assert_each_chunk_ran_and_counted_once(cluster, job_id, log, chunks)


# --- 3. A scheduling host 45 s ahead ---------------------------------------------------------------------------


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is absent (Debian: apt-get install faketime)")
def test_a_scheduling_host_45_seconds_ahead_runs_every_tick_once_and_abandons_no_healthy_run(cluster):
    """Beat and a scheduler worker on `clock`, whose clock is 45 s ahead, beside `w1` and `w2`'s: every tick of
    a clustered job runs exactly once (none missed, none early, by the database's clock) and a run that takes
    longer than its period, heartbeating, is never abandoned (so it never runs beside itself)."""
    clock = cluster.hosts["clock"]
    skewed = {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": SKEW}
    processes = [clock.start("scheduler", **skewed), clock.start("beat", **skewed)]
    try:
        wait_until_ready(processes)
        since = database_now(cluster)
        record = Path(cluster.settings[RECORD_FILE])

        def runs_since(job: str) -> list[dict]:
            return [
                run for run in read_runs(record) if run["job"] == job and datetime.fromisoformat(run["tick"]) >= since
            ]

        wait_until(
            lambda: len(runs_since(TICKING)) >= 10 and len(runs_since(LONG_RUNNER)) >= 3,
            JOB_TIMEOUT,
            message=lambda: (len(runs_since(TICKING)), len(runs_since(LONG_RUNNER))),
        )
        until = database_now(cluster)
    finally:
        clock.stop(processes)

    ticking = runs_since(TICKING)
    ran = Counter(datetime.fromisoformat(run["tick"]) for run in ticking)
    first, last = min(ran), max(tick for tick in ran if tick <= until)
    every_tick = {first + TICK_PERIOD * n for n in range(int((last - first) / TICK_PERIOD) + 1)}
    outcomes = dict(
        cluster.sql("SELECT tick, outcome FROM scheduling_jobrun WHERE job_name = %s AND tick >= %s", [TICKING, since])
    )
    early = [
        run["tick"] for run in ticking if datetime.fromisoformat(run["started"]) < datetime.fromisoformat(run["tick"])
    ]
    report(
        "scheduling host 45 s ahead",
        ticks=len(every_tick),
        ran_once=sum(ran[t] == 1 for t in every_tick),
        missed=sorted(t.isoformat() for t, outcome in outcomes.items() if outcome == "missed"),
        early=len(early),
    )
    assert max(ran.values()) == 1
    assert sorted(every_tick - set(ran)) == [], "ticks that never ran"
    assert [tick for tick, outcome in outcomes.items() if outcome == "missed" and first <= tick <= last] == []
    assert early == [], "ticks run before their time, by the database's clock"

    abandoned = cluster.sql(
        "SELECT count(*) FROM scheduling_jobrun WHERE outcome = 'abandoned' AND tick >= %s", [since]
    )[0][0]
    long_runs = sorted((run["started"], run["finished"]) for run in runs_since(LONG_RUNNER))
    assert abandoned == 0
    assert all(earlier_end <= later_start for (_, earlier_end), (later_start, _) in pairwise(long_runs)), long_runs


# --- 4. A rolling upgrade: the previous release's processes on one host ---------------------------------------

PREVIOUS_RELEASE = "395d480"  # the release this one upgrades from (README, Upgrading): move it on with each release
PREVIOUS_PROCESSES = {  # its Procfile's commands (`jobsite`, its shell then), run with the venv's python
    "worker": "python -m celery -A jobsite worker -E --loglevel INFO --hostname worker-%h-%i",
    "scheduler": "python manage.py run_scheduler_worker",
    "beat": "python -m celery -A jobsite beat --loglevel INFO --pidfile=",
}


@pytest.fixture(scope="module")
def previous_release(cluster: Cluster) -> Path:
    """The previous release's tree (`git archive`), where every host sees it."""
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], cwd=PROJECT_DIR, capture_output=True, check=False
    )
    if known.returncode != 0:
        pytest.skip(f"the previous release {PREVIOUS_RELEASE} is not in this clone's history")
    tree = cluster.directory / "previous-release"
    tree.mkdir(mode=0o755)
    archive = subprocess.run(["git", "archive", PREVIOUS_RELEASE], cwd=PROJECT_DIR, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def start_previous(host: Host, tree: Path, kind: str) -> HostProcess:
    """A process of the previous release on `host`, run from its tree so that it imports its own code, with the
    cluster's settings but for this release's test schedules (a module the previous release does not have)."""
    return host.start_program(
        ["sh", "-c", f"cd {shlex.quote(str(tree))} && exec {PREVIOUS_PROCESSES[kind]}"],
        name=kind,
        SCHEDULING_JOB_MODULES="",
    )


def hosts_that_ran(cluster: Cluster, job_id: str) -> set[str]:
    workers = {
        worker
        for (worker,) in cluster.sql(
            "SELECT DISTINCT worker FROM batch_workchunk WHERE instance_id = %s AND worker <> ''", [job_id]
        )
    }
    return {host for host in cluster.hosts if any(f"@worker-{host}-" in worker for worker in workers)}


def test_a_host_of_the_previous_release_beside_this_ones_keeps_every_job_and_schedule_running(
    cluster, shared, previous_release
):
    """`old` runs the previous release's worker, scheduler worker and beat on node `main`, beside `w1` and `w2`'s
    current ones: a job's chunks run on both releases, each exactly once, and the scheduled jobs only this
    release declares (which the previous beat disables at its start) keep running."""
    old = cluster.hosts["old"]
    log = shared / "ran"
    chunks = 30
    processes = [start_previous(old, previous_release, "worker"), start_previous(old, previous_release, "scheduler")]
    try:
        wait_until_ready(processes)
        job_id = start_logged_job(cluster.hosts["w1"], log, shared / "no-hold", chunks=chunks, sleep_ms=300)
        processes.append(start_previous(old, previous_release, "beat"))
        wait_until_ready(processes[-1:])
        old_beat_started = database_now(cluster)
        assert wait_for_job(cluster, job_id) == "COMPLETED"
        ran_on = hosts_that_ran(cluster, job_id)

        def ticks_since_old_beat() -> list[datetime]:
            return sorted(
                tick
                for (tick,) in cluster.sql(
                    "SELECT tick FROM scheduling_jobrun WHERE job_name = %s AND outcome = 'succeeded' AND tick > %s",
                    [TICKING, old_beat_started],
                )
            )

        ticks = wait_until(
            lambda: len(ticks := ticks_since_old_beat()) >= 4 and ticks,
            JOB_TIMEOUT,
            message="this release's scheduled job stopped after the previous release's beat started",
        )
        disabled = "SELECT name FROM django_celery_beat_periodictask WHERE NOT enabled"
        wait_until(
            lambda: cluster.sql(disabled) == [],
            JOB_TIMEOUT,
            message=lambda: f"scheduled jobs left disabled: {cluster.sql(disabled)}",
        )
    finally:
        old.stop(processes)
    report(
        "previous release's worker, scheduler and beat on one host",
        chunks_on_previous=cluster.sql(
            "SELECT count(*) FROM batch_workchunk WHERE instance_id = %s AND target_step_id = 'log' "
            "AND worker LIKE '%%@worker-old-%%'",
            [job_id],
        )[0][0],
        longest_gap_between_ticks_s=max((later - earlier).total_seconds() for earlier, later in pairwise(ticks)),
    )
    assert {"old", "w1"} <= ran_on or {"old", "w2"} <= ran_on, ran_on
    assert_each_chunk_ran_and_counted_once(cluster, job_id, log, chunks)
