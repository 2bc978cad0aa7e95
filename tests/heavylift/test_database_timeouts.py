"""The libpq client timeouts of the settings reach real connections: a database host that accepts the TCP
connection and then says nothing (a vanished or wedged server) costs `connect_timeout`, not minutes."""

import socket
import time

import psycopg
import pytest
from django.conf import settings


def test_a_connection_to_a_server_that_never_answers_gives_up_after_connect_timeout():
    options = {**settings.DATABASES["default"]["OPTIONS"], "connect_timeout": 2}
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(host="127.0.0.1", port=silent.getsockname()[1], dbname="x", user="x", **options)
        waited = time.monotonic() - started
    assert 1.5 < waited < 6, f"gave up after {waited:.1f} s"


@pytest.mark.django_db(transaction=True)
def test_a_session_that_dies_inside_a_transaction_gives_its_row_locks_back_without_the_server_being_configured():
    """The server's side is set by each session itself: a client gone silent inside a transaction (its host
    powered off) holds its row locks only for the idle-in-transaction timeout, not until TCP gives up."""
    from django.db import connection

    parameters = connection.get_connection_params()
    parameters["options"] = parameters["options"].replace(
        "idle_in_transaction_session_timeout=60000", "idle_in_transaction_session_timeout=1000"
    )
    dead = psycopg.connect(**parameters)
    with psycopg.connect(**parameters, autocommit=True) as alive:
        dead.execute("SELECT pg_advisory_xact_lock(4242)")  # inside a transaction; then the client says nothing
        started = time.monotonic()
        alive.execute("SET lock_timeout = '10s'")
        alive.execute("SELECT pg_advisory_lock(4242)")
        waited = time.monotonic() - started
        alive.execute("SELECT pg_advisory_unlock(4242)")
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
        dead.execute("SELECT 1")  # the server ended the session: its transaction and locks are gone
    dead.close()
    assert 0.5 < waited < 5, f"the lock came back after {waited:.1f} s"
