"""Beats and scheduler workers on hosts whose clocks are 45 s off (libfaketime), beside a correct one.

With the hosts' clocks, a scheduler 45 s ahead recorded the correct beat's ticks `missed` (never run), and
abandoned every running run the moment it took a message (the heartbeat, stamped by the database, looked
45 s old), so a long job ran twice at once; a beat 45 s ahead sent every tick 45 s early. Everything is
judged on the database's clock now: every tick runs exactly once, on time, and no healthy run is abandoned.
Executions are counted from what the jobs themselves recorded, not only from the run rows.
"""

from collections import Counter
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from scheduling.models import JobRun, RunOutcome
from tests.processes import (
    celery_beat,
    scheduler_worker,
    start_all,
    stop_all,
    wait_until,
    wait_until_beating,
    wait_until_ready,
)
from tests.scheduling.recorder import RECORD_FILE, read_runs
from tests.scheduling.test_cluster import unique

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")  # Debian's, for threaded programs
pytestmark = [
    pytest.mark.acceptance,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is absent (Debian: apt install faketime)"),
]

EVERY_FIVE = "tests.scheduling.periodic_skewed_hosts.every_five_seconds"
LONG_RUNNER = "tests.scheduling.periodic_skewed_hosts.runs_twelve_seconds"
PERIOD = timedelta(seconds=5)
CEILING = 240  # seconds: six processes starting on a loaded 2-core machine
SKEWS = {"right": None, "ahead": "+45s", "behind": "-45s"}


def skewed(skew: str | None) -> dict[str, str]:
    """The environment of a process whose clock is `skew` off (libfaketime; its monotonic clock moves by as much,
    which changes no interval: leaving it alone made Python's sleep fail with EINVAL)."""
    if skew is None:
        return {}
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": skew}


def outcomes(job: str) -> Counter:
    return Counter(JobRun.objects.filter(job_name=job).values_list("outcome", flat=True))


def test_hosts_45_seconds_off_run_every_tick_exactly_once_and_abandon_no_healthy_run(processes, tmp_path):
    record = tmp_path / "runs.jsonl"
    env = {
        "SCHEDULER_QUEUE": unique(),
        RECORD_FILE: str(record),
        "SCHEDULER_THREAD_COUNT": "2",
        "SCHEDULING_JOB_MODULES": "tests.scheduling.periodic_skewed_hosts",
    }
    workers, beats = [], []
    for node, skew in SKEWS.items():
        node_env = {**env, "NODE_ID": f"{node}-{unique()}", **skewed(skew)}
        workers.append(scheduler_worker(node_env, name=f"scheduler-{node}"))
        beats.append(celery_beat(node_env, name=f"beat-{node}"))
    processes.extend(workers + beats)
    start_all(workers, wait_until_ready)
    start_all(beats, wait_until_beating)

    wait_until(
        lambda: outcomes(EVERY_FIVE)[RunOutcome.SUCCEEDED] >= 10 and outcomes(LONG_RUNNER)[RunOutcome.SUCCEEDED] >= 3,
        CEILING,
        message=lambda: (outcomes(EVERY_FIVE), outcomes(LONG_RUNNER)),
    )
    stop_all(beats + workers)
    records = read_runs(record)

    # Every tick from the first run to the last ran exactly once, none early, none missed.
    rows = dict(JobRun.objects.filter(job_name=EVERY_FIVE).values_list("tick", "outcome"))
    executions = Counter(datetime.fromisoformat(r["tick"]) for r in records if r["job"] == EVERY_FIVE)
    first, last = min(executions), max(executions)
    every_tick = {first + PERIOD * n for n in range(int((last - first) / PERIOD) + 1)}
    assert set(executions) == every_tick, f"ticks not run: {sorted(every_tick - set(executions))}"
    assert max(executions.values()) == 1
    # (A tick before the first run may be missed: the processes' first messages, taken while the others start.)
    missed = sorted(tick for tick, outcome in rows.items() if outcome == RunOutcome.MISSED)
    assert [tick for tick in missed if tick >= first] == [], f"first run {first}, missed {missed}"
    print(f"ran {len(executions)} ticks from {first} to {last}; missed before the first run: {missed}")
    assert all(
        datetime.fromisoformat(r["started"]) >= datetime.fromisoformat(r["tick"])
        for r in records
        if r["job"] == EVERY_FIVE
    ), "a tick ran before its time (by the database's clock)"

    # The 12 s job was never abandoned while it heartbeat, so it never ran beside itself.
    long_outcomes = outcomes(LONG_RUNNER)
    assert long_outcomes[RunOutcome.ABANDONED] == 0 and outcomes(EVERY_FIVE)[RunOutcome.ABANDONED] == 0
    long_runs = sorted((r["started"], r["finished"]) for r in records if r["job"] == LONG_RUNNER)
    assert len(long_runs) == long_outcomes[RunOutcome.SUCCEEDED]
    assert all(earlier_end <= later_start for (_, earlier_end), (later_start, _) in pairwise(long_runs))

    # ... and the skewed beats did send (their messages found their ticks taken, or ran them), on clocks that
    # were off indeed.
    for beat in beats:
        assert f"Sending due task {EVERY_FIVE}" in beat.output()
    assert "45.0 s ahead of the database's" in beats[1].output() and "45.0 s behind the database's" in beats[2].output()
