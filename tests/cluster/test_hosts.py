"""The harness itself: hosts are separate machines (name, disk, address), faults are silent, and nothing is
left behind, also when the test fails. No database: a few seconds."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.cluster.hosts import CLAIM_DIRECTORY, Cluster, needs_root
from tests.processes import wait_until

pytestmark = needs_root

CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close(); print('open')\n"
    "except OSError as error: print(type(error).__name__)"
)


def test_hosts_have_their_own_name_and_disk_and_reach_each_other_until_cut():
    with Cluster.create() as cluster:
        a, b = cluster.add_host("alpha"), cluster.add_host("beta")
        a.run(["sh", "-c", 'echo alpha > "$MEDIA_ROOT/whose"'])
        listener = b.start_program(["python", "-m", "http.server", "9000", "--bind", b.address], name="listener")

        assert [a.run(["hostname"]).strip(), b.run(["hostname"]).strip()] == ["alpha", "beta"]
        assert b.run(["sh", "-c", 'ls "$MEDIA_ROOT"']).strip() == ""  # the same path, another disk
        assert (a.disk / "whose").read_text() == "alpha\n"

        def connect() -> str:
            return a.run(["python", "-c", CONNECT, b.address, "9000"]).strip()

        wait_until(lambda: connect() == "open", 60, message=listener.tail)
        a.cut_from(b, 9000)
        assert connect() == "TimeoutError", "silent: no RST, no ICMP"
        a.heal_from(b, 9000)
        assert connect() == "open"
        b.cut()
        assert connect() == "TimeoutError"
        b.heal()
        assert connect() == "open"


def test_everything_is_removed_even_when_the_test_fails():
    with pytest.raises(RuntimeError, match="the test failed"), Cluster.create() as cluster:
        host = cluster.add_host("doomed")
        sleeper = host.start_program(["sleep", "600"], name="sleeper")
        left = (cluster.bridge, host.interface, host.holder.pid, sleeper.popen.pid, cluster.directory, cluster.claim)
        raise RuntimeError("the test failed")

    bridge, interface, holder, process, directory, claim = left
    for link in (bridge, interface):
        assert subprocess.run(["ip", "link", "show", link], capture_output=True, check=False).returncode != 0
    for pid in (holder, process):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not directory.exists() and not claim.exists() and claim.parent == CLAIM_DIRECTORY
