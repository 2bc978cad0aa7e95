"""`make demo` binds to this machine only, says in one line which port is taken, notices the stack exiting,
and leaves one expiring admin token however often it runs."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest
from django.core.management import CommandError, call_command

from fhirjobs.bulkexport import views as bulkexport
from fhirjobs.bulkimport import views as bulkimport
from fhirjobs.bulkpatch import views as bulkpatch
from fhirjobs.deleteexpunge import views as deleteexpunge
from fhirjobs.expunge import views as expunge
from heavylift.management.commands import demo
from jobsite.models import ApiToken
from tests.processes import PROJECT_DIR, free_port, subprocess_database_url


def test_a_busy_port_is_one_line_before_anything_starts(settings):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        settings.BIND_ADDRESS, settings.PORT = "127.0.0.1", holder.getsockname()[1]
        with pytest.raises(CommandError, match=rf"^PORT {settings.PORT} on 127.0.0.1 is busy .*`PORT="):
            call_command("demo", "--exit-after")


def test_a_busy_flower_port_is_named_before_anything_starts(settings):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        settings.BIND_ADDRESS, settings.PORT, settings.FLOWER_PORT = "127.0.0.1", free_port(), holder.getsockname()[1]
        with pytest.raises(CommandError, match=rf"^FLOWER_PORT {settings.FLOWER_PORT} on 127.0.0.1 is busy"):
            call_command("demo", "--exit-after")


def test_a_port_whose_connections_linger_in_time_wait_is_free(settings):
    """After Ctrl-C the web process's closed connections sit in TIME_WAIT: gunicorn binds regardless."""
    settings.BIND_ADDRESS = "127.0.0.1"
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn's listener: its connections too
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server closes first: its side of the connection goes to TIME_WAIT
        client.close()
    time.sleep(0.1)

    demo.refuse_busy_ports({"PORT": port})


def test_the_demo_is_interrupted_when_the_stack_exits_under_it():
    stack = subprocess.Popen(["sleep", "0.3"])
    watch = demo.StackWatch(stack)
    with pytest.raises(KeyboardInterrupt):
        time.sleep(30)  # the demo following its job: interrupted when the stack exits, not after a timeout
    assert watch.exited


@pytest.mark.django_db
def test_each_demo_revokes_the_last_demo_s_token_and_its_own_expires(django_user_model, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_TOKEN_FILE", tmp_path / "demo-token-prefix")
    admin = django_user_model.objects.create_user("admin", is_staff=True)

    demo.demo_token(admin)
    demo.demo_token(admin)

    first, second = ApiToken.objects.filter(user=admin).order_by("created_at", "id")
    assert first.revoked_at is not None and second.revoked_at is None
    assert second.expires_at is not None


def test_the_web_process_listens_on_loopback_unless_told_otherwise(settings):
    web = next(line for line in (PROJECT_DIR / "Procfile").read_text().splitlines() if line.startswith("web:"))
    assert "--bind ${BIND_ADDRESS:-127.0.0.1}:${PORT:-8000}" in web
    assert "--no-control-socket" in web  # no shared ~/.gunicorn/gunicorn.ctl


def test_the_web_process_keeps_a_connection_open_past_the_status_urls_retry_after():
    """A client polls a status URL after its Retry-After on the same connection: closing idle connections at
    that very moment (gunicorn's default keep-alive, 2 s) resets the poll or leaves it without a response."""
    web = next(line for line in (PROJECT_DIR / "Procfile").read_text().splitlines() if line.startswith("web:"))
    keep_alive = int(re.search(r"--keep-alive (\d+)", web).group(1))
    retry_afters = {bulkexport.RETRY_AFTER_SECONDS, bulkimport.RETRY_AFTER_SECONDS, bulkpatch.RETRY_AFTER_SECONDS}
    retry_afters |= {deleteexpunge.RETRY_AFTER_SECONDS, expunge.RETRY_AFTER_SECONDS}
    assert keep_alive >= 3 * max(retry_afters)


@pytest.mark.django_db(transaction=True)
def test_the_readme_s_start_job_example_works_in_the_readme_s_own_shell():
    """The diagnostic jobs are registered only where BATCH_DIAGNOSTIC_JOBS is true: the example says so."""
    readme = " ".join((PROJECT_DIR / "README.md").read_text().split())
    example = re.search(
        r"`((?:[A-Z_]+=\S+ )*)\.venv/bin/python manage\.py start_job (DIAGNOSTIC_NOOP [^`]*?) --wait`", readme
    )
    assert example, "the README shows how to start a job from the shell"
    variables = dict(pair.split("=", 1) for pair in example[1].split())
    environment = {name: value for name, value in os.environ.items() if name != "BATCH_DIAGNOSTIC_JOBS"}
    arguments = ["DIAGNOSTIC_NOOP", "--params", '{"chunks": 1}']
    result = subprocess.run(
        [sys.executable, "manage.py", "start_job", *arguments],
        cwd=PROJECT_DIR,
        env={**environment, **variables, "DATABASE_URL": subprocess_database_url()},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
