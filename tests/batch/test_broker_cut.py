"""A host that reaches PostgreSQL but not Redis: its Redis calls time out, it runs no maintenance pass, and its
workers stop beating, so that its node counts as dead and its jobs move (a beat proving the database alone
kept them stalled on the cut host).

The cut Redis is a socket that accepts connections and never answers: what a host whose Redis vanished
sees, where a refused connection would fail at once anyway.
"""

import socket
import time
from collections.abc import Iterator

import pytest

from batch.heartbeats import Heartbeat
from batch.maintenance import run_maintenance_pass
from batch.models import WorkerHeartbeat
from batch.queues import broker_is_reachable

pytestmark = pytest.mark.django_db(transaction=True)

SOCKET_TIMEOUT = 1


@pytest.fixture
def silent_broker(settings) -> Iterator[None]:
    """The broker URL points at a listening socket that never answers; Redis calls time out after 1 s."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        settings.REDIS_CLIENT_OPTIONS = {
            **settings.REDIS_CLIENT_OPTIONS,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": SOCKET_TIMEOUT,
        }
        yield


def test_a_call_to_a_silent_broker_fails_within_its_socket_timeout(silent_broker):
    started = time.monotonic()
    assert broker_is_reachable() is False
    assert time.monotonic() - started < SOCKET_TIMEOUT + 2


def test_a_host_that_cannot_reach_the_broker_runs_no_maintenance_pass(silent_broker, caplog):
    assert run_maintenance_pass().ran is False
    assert "the broker does not answer from this host: no maintenance pass here" in caplog.text


def test_a_worker_that_cannot_reach_the_broker_records_no_heartbeat(silent_broker, caplog):
    heartbeat = Heartbeat("cut-off@host/1", "node-cut", "batch")

    assert heartbeat.beat() is False
    assert not WorkerHeartbeat.objects.filter(worker="cut-off@host/1").exists()
    assert "the broker does not answer" in caplog.text


def test_with_the_broker_back_the_heartbeat_is_recorded_again_and_says_so(settings, caplog):
    heartbeat = Heartbeat("back@host/1", "node-back", "batch")
    heartbeat.failing = True  # as after the cut above

    assert heartbeat.beat() is True
    assert WorkerHeartbeat.objects.filter(worker="back@host/1").exists()
    assert "heartbeat recorded again" in caplog.text
