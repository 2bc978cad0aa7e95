"""A pytest plugin (`-p tests.isolation` in pytest.ini): each test run gets a Redis database of its own.

`make test` and `make demo` read the same `.services/env`, so both would use the Redis database that
`REDIS_URL` names: a test flushing it, or a test worker consuming the demo's `default` queue, would disturb
the demo. Before Django reads its settings, this plugin claims a free database (1-15, never the one
`REDIS_URL` names) with a key that expires unless this run keeps renewing it, points `REDIS_URL` there for
this process and every process the tests start, and flushes that database alone when the run ends.
Celery prefixes its broadcast channels with the database number, so those stay apart too.

Under pytest-xdist (`make test` runs `-n`) every worker process is a run of its own: each claims its own
database (and pytest-django gives each its own test database, `test_<name>_gw<N>`), so the workers' celery
workers, queues and broadcasts never meet. The controller runs no test and claims none.

It also sets what the suite's processes need whatever the shell says: the diagnostic jobs switched on.
"""

from __future__ import annotations

import os
import threading
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

DATABASES = range(16)  # Redis's default `databases 16`
CLAIM_KEY = "heavylift:test-run-claims:{database}"  # kept in the database REDIS_URL names, which no run uses
CLAIM_SECONDS = 120  # a crashed run's claim lapses after this
RENEW_SECONDS = 20
TEST_REDIS_DATABASE = "HEAVYLIFT_TEST_REDIS_DATABASE"  # set for the processes started by tests, for the record


class RedisDatabaseClaim:
    """Holds one Redis database for this test run, renewing the claim from a daemon thread."""

    def __init__(self, home_url: str):
        import redis

        parts = urlsplit(home_url)
        self.home_database = int(parts.path.lstrip("/") or 0)
        self.home = redis.Redis.from_url(home_url)
        self.token = uuid.uuid4().hex
        self.database = self._claim()
        self.url = urlunsplit(parts._replace(path=f"/{self.database}"))
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="redis-claim", daemon=True)
        self._renewer.start()

    def _claim(self) -> int:
        for database in DATABASES:
            if database != self.home_database and self.home.set(
                CLAIM_KEY.format(database=database), self.token, nx=True, ex=CLAIM_SECONDS
            ):
                return database
        raise pytest.UsageError("every Redis database is claimed by another test run; try again in two minutes")

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                self.home.set(CLAIM_KEY.format(database=self.database), self.token, ex=CLAIM_SECONDS)
            except Exception:  # a test may stop Redis for a moment; the next renewal tries again
                pass

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushdb()
        finally:
            client.close()

    def release(self) -> None:
        self._stop.set()
        self.flush()
        key = CLAIM_KEY.format(database=self.database)
        if self.home.get(key) == self.token.encode():
            self.home.delete(key)
        self.home.close()


_claim: RedisDatabaseClaim | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args) -> None:
    """Runs before pytest-django loads the settings, which read REDIS_URL once."""
    global _claim
    os.environ["BATCH_DIAGNOSTIC_JOBS"] = "true"
    home_url = os.environ.get("REDIS_URL", "").strip()
    if not home_url or _claim is not None:
        return  # settings will say REDIS_URL is missing
    if _is_xdist_controller(early_config):
        return  # its workers, which inherit the home REDIS_URL, claim a database each
    _claim = RedisDatabaseClaim(home_url)
    _claim.flush()  # whatever a crashed run left there
    os.environ["REDIS_URL"] = _claim.url
    os.environ[TEST_REDIS_DATABASE] = str(_claim.database)


def _is_xdist_controller(early_config) -> bool:
    """This process hands the tests to pytest-xdist workers (`-n N`, N > 0) and runs none itself."""
    workers = getattr(early_config.known_args_namespace, "numprocesses", None)
    return bool(workers) and "PYTEST_XDIST_WORKER" not in os.environ


def pytest_report_header(config) -> str | None:
    return f"redis: database {_claim.database} of its own ({_claim.url})" if _claim else None


def pytest_unconfigure(config) -> None:
    global _claim
    if _claim is not None:
        _claim.release()
        _claim = None


def flush_test_redis() -> None:
    """Empty this run's Redis database (a test simulating a Redis failure), never anyone else's."""
    assert _claim is not None, "the tests.isolation plugin is not loaded"
    _claim.flush()
