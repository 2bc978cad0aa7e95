"""The suite keeps to a Redis database of its own, so it never disturbs a demo or a stack on the same Redis."""

import os
from urllib.parse import urlsplit, urlunsplit

import redis
from django.conf import settings

from tests import isolation


def database_of(url: str) -> int:
    return int(urlsplit(url).path.lstrip("/") or 0)


def test_this_run_and_the_processes_it_starts_use_a_claimed_database_other_than_the_configured_one():
    claim = isolation._claim
    assert claim is not None
    home = redis.Redis.from_url(urlunsplit(urlsplit(settings.REDIS_URL)._replace(path=f"/{claim.home_database}")))

    assert database_of(settings.REDIS_URL) == database_of(settings.CELERY_BROKER_URL) == claim.database
    assert claim.database != claim.home_database
    assert os.environ["REDIS_URL"] == settings.REDIS_URL, "what processes started by tests inherit"
    assert home.get(isolation.CLAIM_KEY.format(database=claim.database)) == claim.token.encode()
    assert home.ttl(isolation.CLAIM_KEY.format(database=claim.database)) > 0, "a crashed run's claim lapses"


def test_flushing_the_test_database_leaves_the_configured_one_alone():
    claim = isolation._claim
    home = redis.Redis.from_url(urlunsplit(urlsplit(settings.REDIS_URL)._replace(path=f"/{claim.home_database}")))
    mine = redis.Redis.from_url(settings.REDIS_URL)
    demo_key = f"heavylift-test-isolation:{os.getpid()}"  # stands for a demo's queued messages
    home.set(demo_key, "still here", ex=60)
    mine.set("scratch", "gone soon")
    try:
        isolation.flush_test_redis()

        assert mine.get("scratch") is None
        assert home.get(demo_key) == b"still here"
    finally:
        home.delete(demo_key)


def test_a_second_run_claims_another_database(monkeypatch):
    claim = isolation._claim
    monkeypatch.setattr(isolation.RedisDatabaseClaim, "_renew", lambda self: None)
    home_url = urlunsplit(urlsplit(settings.REDIS_URL)._replace(path=f"/{claim.home_database}"))

    second = isolation.RedisDatabaseClaim(home_url)
    try:
        assert second.database not in (claim.database, claim.home_database)
    finally:
        key = isolation.CLAIM_KEY.format(database=second.database)
        second.home.delete(key)  # release without flushing: nothing of this run is there
        second._stop.set()
