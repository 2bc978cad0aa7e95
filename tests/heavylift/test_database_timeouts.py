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
