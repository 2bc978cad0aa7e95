"""What the benchmarks share: a throw-away database of their own, percentiles, a free port."""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tests.processes import process_logs


@contextmanager
def bench_database(suffix: str, *, reuse: bool = False, keep: bool = False) -> Iterator[tuple[str, str]]:
    """`<DATABASE_URL's database>_<suffix>`, created (unless `reuse`), migrated, and dropped afterwards (unless
    `keep`), with Django set up on it and DATABASE_URL pointing at it for the subprocesses. Yields (url, name)."""
    base_url = os.environ.get("DATABASE_URL") or sys.exit("DATABASE_URL is not set (see .env.example)")
    url, name = bench_database_url(base_url, suffix)
    if not reuse:
        recreate_database(base_url, name)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "heavylift.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connections

    try:
        call_command("migrate", verbosity=0)
        yield url, name
    finally:
        connections.close_all()
        if not keep:
            drop_database(base_url, name)


def bench_database_url(url: str, suffix: str) -> tuple[str, str]:
    """The URL and name of `<database>_<suffix>` on the server of `url`."""
    parts = urlsplit(url)
    name = f"{parts.path.lstrip('/')}_{suffix}"
    return urlunsplit(parts._replace(path=f"/{name}")), name


def recreate_database(url: str, name: str) -> None:
    drop_database(url, name)
    with psycopg.connect(_maintenance_url(url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(_maintenance_url(url), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _maintenance_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def percentile_ms(timings: list[float], percentile: int) -> float:
    """The percentile of timings in seconds, in milliseconds (nan with fewer than two)."""
    if len(timings) < 2:
        return float("nan")
    return statistics.quantiles(timings, n=100, method="inclusive")[percentile - 1] * 1000


@contextmanager
def scratch_directory(name: str) -> Iterator[Path]:
    """A directory of the benchmark's own, removed afterwards; the processes it starts with `tests.processes`
    (the acceptance tests' harness) write their logs there."""
    directory = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    process_logs.directory = directory
    try:
        yield directory
    finally:
        process_logs.directory = None
        shutil.rmtree(directory, ignore_errors=True)
