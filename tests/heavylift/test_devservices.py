"""Without DATABASE_URL / REDIS_URL, `make` starts real servers from wheels, and reuses them when up."""

import os
import subprocess
import sys

import dj_database_url
import psycopg
import pytest
import redis

from heavylift import devservices
from tests.processes import PROJECT_DIR


@pytest.fixture
def services_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(devservices, "SERVICES_DIR", tmp_path)
    monkeypatch.setattr(devservices, "PGDATA", tmp_path / "pg")
    monkeypatch.setattr(devservices, "REDIS_DIR", tmp_path / "redis")
    monkeypatch.setattr(devservices, "ENV_FILE", tmp_path / "env")
    yield tmp_path
    devservices.stop()


def test_embedded_redis_starts_once_and_is_reused(services_dir):
    first = devservices._start_redis()
    second = devservices._start_redis()

    assert first == second
    assert not first.endswith(":6379/0"), "must not take the machine's own Redis port"
    assert redis.Redis.from_url(first).ping()


def test_embedded_postgres_serves_the_heavylift_database(services_dir):
    url = devservices._start_postgres()

    assert devservices._start_postgres() == url
    params = dj_database_url.parse(url)
    with psycopg.connect(host=params["HOST"], dbname=params["NAME"], user=params["USER"]) as connection:
        assert connection.execute("SELECT current_database()").fetchone() == ("heavylift",)


def test_urls_that_are_set_are_passed_through(services_dir, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/heavylift")
    monkeypatch.setenv("REDIS_URL", "redis://broker.example:6379/0")

    env = devservices.start()

    assert env["DATABASE_URL"] == "postgresql://db.example/heavylift"
    assert env["REDIS_URL"] == "redis://broker.example:6379/0"
    assert "DATABASE_URL=postgresql://db.example/heavylift\n" in (services_dir / "env").read_text()
    assert not (services_dir / "pg").exists() and not (services_dir / "redis").exists()


def test_the_makefiles_command_runs_before_any_setting_exists(tmp_path):
    """`make services` runs it on a new machine: no SECRET_KEY yet, which the Celery app's settings refuse."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    done = subprocess.run(
        [sys.executable, "heavylift/devservices.py", "nonsense"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr.strip()) == (2, "usage: python heavylift/devservices.py start|stop")
