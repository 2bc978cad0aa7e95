"""`make demo`: bring the whole stack up from the Procfile, run work through it, print where things are."""

import _thread
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from batch.control import BatchError, follow_job, start_job
from fhirjobs.bulkimport.inline import load_paths
from fhirstore.models import Resource
from jobsite.accounts import ensure_admin_user
from jobsite.tokens import TokenError, issue_token, revoke_tokens

DEMO_JOB = "DIAGNOSTIC_NOOP_GATED"
DEMO_PARAMETERS = {"chunks": 40, "sleep_ms": 150, "records_per_chunk": 25}  # a few seconds on two processes
DEMO_TIMEOUT = 120  # seconds; the worker may still be starting when the job is queued
SAMPLE_DATA = settings.BASE_DIR / "tests" / "fhirstore" / "fixtures"  # Synthea patients, as the tests use them
EXPORT_POLL_SECONDS = 1  # the demo polls faster than the 2 s the server suggests, to show each step
DEMO_TOKEN_DAYS = 7  # the demo's admin token expires; the next `make demo` revokes it and makes another
DEMO_TOKEN_FILE = settings.BASE_DIR / ".services" / "demo-token-prefix"  # which token the last demo made
DEMO_METRICS_DIR = settings.BASE_DIR / ".services" / "prometheus"  # the stack's processes' /metrics counters


def web_url(port: int) -> str:
    host = "127.0.0.1" if settings.BIND_ADDRESS in ("0.0.0.0", "::") else settings.BIND_ADDRESS
    return f"http://{host}:{port}"


def refuse_busy_ports(ports: dict[str, int]) -> None:
    """One line per busy port, before anything starts, rather than a process dying in the stack's log.

    Probed as the servers bind (SO_REUSEADDR, as gunicorn and Tornado do): a port whose last connections
    linger in TIME_WAIT after a Ctrl-C is free for them, so it is free here too."""
    busy = []
    for variable, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in settings.BIND_ADDRESS else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((settings.BIND_ADDRESS, port))
            except OSError as error:
                busy.append(
                    f"{variable} {port} on {settings.BIND_ADDRESS} is busy ({error.strerror}); choose another, "
                    f"e.g. `{variable}={port + 1} make demo`"
                )
    if busy:
        raise CommandError("; ".join(busy))


class StackWatch:
    """Interrupts the demo (its main thread) when the stack exits while the demo still works through it, so
    it says so at once instead of waiting out its timeouts and blaming the worker."""

    def __init__(self, stack: subprocess.Popen):
        self.stack = stack
        self.exited = False
        self.working = True
        threading.Thread(target=self._watch, name="stack-watch", daemon=True).start()

    def _watch(self) -> None:
        self.stack.wait()
        if self.working:
            self.exited = True
            _thread.interrupt_main()


def demo_token(user) -> str:
    """A token for the demo's admin that expires, the previous demo's revoked: `make demo` run ten times leaves one."""
    if DEMO_TOKEN_FILE.exists():
        try:
            revoke_tokens(token=DEMO_TOKEN_FILE.read_text().strip())
        except TokenError:  # not a prefix (edited by hand): nothing to revoke, the new token is made anyway
            pass
    issued = issue_token(user, expires_in_days=DEMO_TOKEN_DAYS)
    DEMO_TOKEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    DEMO_TOKEN_FILE.write_text(issued.token.prefix + "\n")
    return issued.plaintext


def fresh_metrics_directory() -> Path:
    """PROMETHEUS_MULTIPROC_DIR for the stack's processes, emptied: counters start at zero with the stack."""
    directory = Path(settings.PROMETHEUS_MULTIPROC_DIR) if settings.PROMETHEUS_MULTIPROC_DIR else DEMO_METRICS_DIR
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def wait_for_web(url: str, stack: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if stack.poll() is not None:
            raise CommandError(f"the stack exited with {stack.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise CommandError(f"{url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.5)


class Command(BaseCommand):
    help = "Start web, worker, beat and Flower (Procfile, through honcho), run the demo work, show the URLs."

    def add_arguments(self, parser):
        parser.add_argument("--exit-after", action="store_true", help="stop the stack once the demo work is done")
        parser.add_argument("--port", type=int, default=settings.PORT, help="the web process's port (default: PORT)")
        parser.add_argument(
            "--stack-log",
            type=Path,
            default=settings.BASE_DIR / ".services" / "stack.log",
            help="where the stack's processes log (default .services/stack.log)",
        )

    def handle(self, *args, exit_after: bool, port: int, stack_log: Path, **options):
        self.port = port
        refuse_busy_ports({"PORT": port, "FLOWER_PORT": settings.FLOWER_PORT})
        password = ensure_admin_user("admin")
        token = demo_token(get_user_model().objects.get(username="admin"))
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "PROMETHEUS_MULTIPROC_DIR": str(fresh_metrics_directory()),
        }
        log_path = stack_log
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.stdout.write(f"starting web, worker, beat and Flower (Procfile); their logs: {log_path}")
        with log_path.open("ab") as log:
            stack = subprocess.Popen(
                [os.path.join(bin_dir, "honcho"), "start", "--port", str(port)],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        watch = StackWatch(stack)
        try:
            wait_for_web(f"{web_url(self.port)}/healthz", stack)
            self.run_demo_job()
            self.run_demo_export(token)
            self.stdout.write(self.style.SUCCESS(self.where_things_are(password, token)))
            watch.working = False
            if not exit_after:
                stack.wait()
        except KeyboardInterrupt:
            if watch.exited:
                raise CommandError(
                    f"the stack exited with {stack.returncode} while the demo ran; why is at the end of {log_path}"
                ) from None
        finally:
            watch.working = False
            if stack.poll() is None:
                stack.terminate()
                stack.wait(30)

    def run_demo_job(self) -> None:
        """A gated job with a reduction, through Redis and the stack's worker, with its progress shown."""
        instance = start_job(DEMO_JOB, DEMO_PARAMETERS, started_by="demo")
        self.stdout.write(f"stack is up; job {DEMO_JOB} {instance.id} runs through Redis on the worker ...")
        try:
            ended = follow_job(instance.id, self.stdout._out, timeout=DEMO_TIMEOUT)
        except BatchError as error:
            raise CommandError(str(error)) from None
        if ended.status != "COMPLETED":
            raise CommandError(f"the demo job {ended.status}: {ended.error_message}")
        self.stdout.write(
            self.style.SUCCESS(
                f"job {ended.id} COMPLETED: report {ended.report}; see it at "
                f"{web_url(self.port)}/admin/batch/jobinstance/{ended.id}/change/"
            )
        )

    def run_demo_export(self, token: str) -> None:
        """Sample data in, then a Bulk Data `$export` over HTTP as a client does it: kick-off, poll, manifest."""
        if not Resource.objects.exists():
            report = load_paths([SAMPLE_DATA / "synthea-3-patients", SAMPLE_DATA / "synthea-bundles"])
            self.stdout.write(f"loaded the sample data: {report.total} resources ({len(report.bad)} refused)")
        base = f"{web_url(self.port)}/fhir"
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
        kick_off = urllib.request.Request(f"{base}/$export", headers={**headers, "Prefer": "respond-async"})
        with urllib.request.urlopen(kick_off, timeout=30) as response:
            status_url = response.headers["Content-Location"]
        self.stdout.write(f"$export kicked off (202); polling {status_url}")
        deadline = time.monotonic() + DEMO_TIMEOUT
        while time.monotonic() < deadline:
            with urllib.request.urlopen(urllib.request.Request(status_url, headers=headers), timeout=30) as response:
                if response.status == 200:
                    manifest = json.load(response)
                    self.stdout.write(
                        self.style.SUCCESS(
                            f"export complete; expires {response.headers['Expires']}; "
                            f"manifest:\n{json.dumps(manifest, indent=2)}"
                        )
                    )
                    if manifest["output"]:
                        self.stdout.write(
                            f"download a file: curl -H 'Authorization: Bearer {token}' '{manifest['output'][0]['url']}'"
                        )
                    return
                self.stdout.write(f"  202 X-Progress: {response.headers['X-Progress']}")
            time.sleep(EXPORT_POLL_SECONDS)
        raise CommandError(f"the demo export did not finish within {DEMO_TIMEOUT}s")

    def where_things_are(self, password: str | None, token: str) -> str:
        login = (
            f"admin / {password}  (shown once; `manage.py changepassword admin` to reset)"
            if password
            else "admin (already created earlier; `manage.py changepassword admin` to reset)"
        )
        return "\n".join(
            [
                "",
                f"  Admin (job dashboard)  {web_url(self.port)}/admin/   login: {login}",
                f"  Health                 {web_url(self.port)}/healthz",
                f"  API token              {token}   (Authorization: Bearer <token>; expires in {DEMO_TOKEN_DAYS} days, "
                "the next demo revokes it)",
                f"  Flower                 http://127.0.0.1:{settings.FLOWER_PORT}/   login: "
                f"{settings.FLOWER_USER} / {settings.FLOWER_PASSWORD}",
                "  Ctrl-C stops the stack; `make stop` stops the embedded PostgreSQL and Redis.",
                "",
            ]
        )
