"""`make demo` binds to this machine only and says so in one line when its port is taken."""
import socket

import pytest
from django.core.management import CommandError, call_command

from tests.processes import free_port


def test_a_busy_port_is_one_line_before_anything_starts(settings):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        settings.BIND_ADDRESS, settings.PORT = "127.0.0.1", holder.getsockname()[1]
        with pytest.raises(CommandError, match=rf"port {settings.PORT} on 127.0.0.1 is busy .* PORT="):
            call_command("demo", "--exit-after")


def test_the_web_process_listens_on_loopback_unless_told_otherwise(settings):
    from tests.processes import PROJECT_DIR

    web = next(line for line in (PROJECT_DIR / "Procfile").read_text().splitlines() if line.startswith("web:"))
    assert "--bind ${BIND_ADDRESS:-127.0.0.1}:${PORT:-8000}" in web
    assert "--no-control-socket" in web  # no shared ~/.gunicorn/gunicorn.ctl
