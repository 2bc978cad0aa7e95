"""A maintenance pass frozen while it holds the cluster's maintenance lease stops nobody for long.

The failure this guards against: a host powered off (or frozen) holding a session-level advisory lock
kept its backend, and so the lock, alive in PostgreSQL; no pass ran anywhere until the backend was
killed by hand. Here a real process holds the lease in the middle of a real pass and is SIGSTOPped: its
connection and backend stay up (the kernel still answers for the socket), exactly what the lock never
survived. Other passes must run again once the lease has lapsed on the database's clock.
"""

import signal
import sys
import time

import pytest
from django.db import connection

from batch.maintenance import run_maintenance_pass
from tests.processes import Process, wait_until

pytestmark = [pytest.mark.acceptance, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 3
CEILING = 120  # seconds a process may take to start on a loaded machine

# The real pass, held up right after it took the lease (where a host would die mid-pass).
HOLDER = """
import time, django
django.setup()
from django.db import connection
import batch.maintenance as maintenance
def hold():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        print("holding the lease, backend", cursor.fetchone()[0], flush=True)
    time.sleep(3600)
maintenance.rehome_stranded_jobs = hold
maintenance.run_maintenance_pass()
"""


def backend_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)", [pid])
        return cursor.fetchone()[0]


def test_a_frozen_holder_stops_other_passes_only_until_its_lease_lapses(processes, settings):
    settings.BATCH_MAINTENANCE_LEASE_SECONDS = LEASE_SECONDS
    holder = Process(
        [sys.executable, "-c", HOLDER],
        env={"BATCH_MAINTENANCE_LEASE_SECONDS": str(LEASE_SECONDS)},
        name="maintenance-holder",
    )
    processes.append(holder)
    holder.wait_for_output("holding the lease", timeout=CEILING)
    backend = int(holder.output().split("backend")[1].split()[0])
    holder.signal_group(signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        assert run_maintenance_pass().ran is False, "the holder's lease is still valid"
        wait_until(
            lambda: run_maintenance_pass().ran,
            LEASE_SECONDS + 30,
            message="no pass ran after the frozen holder's lease lapsed",
        )
        resumed_after = time.monotonic() - frozen_at
        assert backend_alive(backend), "the frozen holder's backend is still there, as a dead host's would be"
        assert resumed_after <= LEASE_SECONDS + 2
        print(f"maintenance resumed {resumed_after:.1f} s after its holder froze (lease {LEASE_SECONDS} s)")
        assert run_maintenance_pass().ran, "and it keeps running, pass after pass"
    finally:
        holder.signal_group(signal.SIGCONT)
