from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.processes import Process, process_logs, stop_all

FIRST_PROCESS_OF_TEST = pytest.StashKey[int]()

if TYPE_CHECKING:  # batch's modules need Django set up, which happens after this file is read
    from batch.api import JobDefinition
    from batch.testing import InProcessBus
    from tests.fhirstore.helpers import FhirClient


@pytest.fixture(scope="session", autouse=True)
def process_log_directory(tmp_path_factory) -> Path:
    """Process logs go to pytest's temporary directory of this run (pytest removes all but the last few runs)."""
    process_logs.directory = tmp_path_factory.mktemp("process-logs")
    return process_logs.directory


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The migrated test database, with a fast reset after transactional tests (tests/database_baseline.py)."""
    from django.test import TransactionTestCase

    from tests.database_baseline import baseline, restore_baseline

    with django_db_blocker.unblock():
        baseline.capture()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TransactionTestCase, "_fixture_teardown", restore_baseline)
        yield


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`make test`: `-n 3 --dist loadfile --no-loadscope-reorder`), the order work is handed out.

    Each test module goes whole to one worker (`loadfile`), so a module-scoped fixture (a cluster, a fault-test
    PostgreSQL, workers started once) is built once; the modules go out in the order of their first test here.
    Modules with acceptance tests (real processes, tens of seconds each) come first, those allowed a longer timeout
    than pytest.ini's (the longest) before them, and the quick modules fill in after, so no worker is left with a
    long module at the end while the others idle. Whole modules move, never a test within its module: their tests
    run in the order a single process runs them. After pytest-django's own sort (trylast); nothing changes without
    `-n`. (`--dist loadgroup` would group by `xdist_group` marks, but pytest-xdist 3.8 marks a group by renaming
    the test, which pytest 9 no longer reads: every test went out alone.)
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    priority: dict[str, tuple[bool, float]] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        no_acceptance, longest = priority.get(module, (True, 0.0))
        priority[module] = (
            no_acceptance and item.get_closest_marker("acceptance") is None,
            min(longest, -_timeout(item)),
        )
    items.sort(key=lambda item: priority[item.nodeid.split("::")[0]])


def _timeout(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    return float(marker.args[0]) if marker is not None and marker.args else 0.0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Names each failed test in the file `make test` gives as HEAVYLIFT_FAILED_TESTS, so it can run them again alone.

    The parallel phase's summary scrolls far above the end of a long log; the rerun prints the names last.
    Written by the controlling process only (an xdist worker's reports reach it too).
    """
    failed_tests = os.environ.get("HEAVYLIFT_FAILED_TESTS")
    if report.failed and failed_tests and not os.environ.get("PYTEST_XDIST_WORKER"):
        with open(failed_tests, "a", encoding="utf-8") as names:
            names.write(report.nodeid + "\n")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[FIRST_PROCESS_OF_TEST] = len(process_logs.started)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A failing test's report ends with the tails of the logs of the processes it started or that still run."""
    if (
        call.excinfo is not None
        and call.when in ("setup", "call")
        and not call.excinfo.errisinstance(pytest.skip.Exception)
    ):
        first = item.stash.get(FIRST_PROCESS_OF_TEST, len(process_logs.started))
        involved = [
            process
            for index, process in enumerate(process_logs.started)
            if index >= first or process.popen.poll() is None
        ]
        if involved:
            item.add_report_section(call.when, "process logs", "\n".join(process.tail() for process in involved))
    yield


BROWSER_TESTS = "tests/browser/"


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """A red banner when the browser tests skipped (tests/browser/conftest.py: no chromium or Playwright).

    Read from the tests' reports, not from state of this process: under pytest-xdist (`make test`) the tests ran
    in worker processes, and this process never loaded tests/browser/conftest.py.
    """
    reasons = {
        str(report.longrepr[2]).removeprefix("Skipped: ")
        for report in terminalreporter.stats.get("skipped", [])
        if report.nodeid.startswith(BROWSER_TESTS) and isinstance(report.longrepr, tuple | list)
    }
    for reason in sorted(reasons):
        terminalreporter.write_sep("!", "THE BROWSER TESTS DID NOT RUN", red=True, bold=True)
        terminalreporter.write_line(f"{reason}.", red=True, bold=True)
        terminalreporter.write_line(
            "The live dashboard is untested in this run: `make test` installs chromium as root.", red=True, bold=True
        )


@pytest.fixture
def processes():
    """Collects processes a test starts and stops them all when it ends, whatever happened."""
    started: list[Process] = []
    yield started
    stop_all(started)


@pytest.fixture
def bus() -> Iterator[InProcessBus]:
    """Work messages stay here until the test delivers them, in this process (no Celery, no Redis)."""
    from batch.testing import in_process_bus

    with in_process_bus() as in_process:
        yield in_process


@pytest.fixture
def define_job() -> Iterator[Callable[..., JobDefinition]]:
    """`define_job(lambda b: b.first_step(...).last_step(...))` builds and registers a uniquely named job."""
    from batch.testing import throwaway_jobs

    with throwaway_jobs() as define:
        yield define


@pytest.fixture
def logged_job():
    """TEST_LOGGED (tests/batch/testjobs), registered for this test: real workers run it, each chunk writes itself down."""
    from batch.registry import registry
    from tests.batch.testjobs.definition import LOGGED_JOB

    registry.register(LOGGED_JOB)
    yield LOGGED_JOB
    registry.unregister(LOGGED_JOB.id, LOGGED_JOB.version)


@pytest.fixture
def api_user(django_user_model):
    """A FHIR client's user (the store's tests and the FHIR jobs' tests)."""
    return django_user_model.objects.create_user("fhir-client")  # no password: hashing one costs ~0.3 s


@pytest.fixture
def token(api_user) -> str:
    from jobsite.tokens import token_for

    return token_for(api_user)


@pytest.fixture
def fhir(token) -> FhirClient:
    from tests.fhirstore.helpers import FhirClient

    return FhirClient(f"Bearer {token}")


@pytest.fixture
def anonymous() -> FhirClient:
    from tests.fhirstore.helpers import FhirClient

    return FhirClient()
