"""Custom scripts: Python a superuser uploads at run time, declaring `@scheduled` jobs, with no restart.

A script is checked before anything is stored: it must compile, load (its top-level code runs once, here),
and declare at least one job with a valid schedule; otherwise nothing is written or scheduled. Saving it
syncs its jobs into PeriodicTask rows and moves django-celery-beat's change marker: beats reload within
their loop interval (5 s) and every worker process's local-job runner within its poll. Workers read the
source from the database when a job runs and keep the compiled module per process, keyed by its hash.
"""
from __future__ import annotations

import builtins
import hashlib
import linecache
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from scheduling.exceptions import CustomScriptsDisabled, InvalidScript, ScriptExists, ScriptNotFound, SchedulingError
from scheduling.models import CustomScript, ScriptAction, ScriptAudit
from scheduling.registry import SCRIPT_JOB_PREFIX, ScheduledJob, collecting_script_jobs
from scheduling.sync import delete_script_jobs, sync_script_jobs

SCRIPT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SOURCE_BYTES = 256 * 1024  # a script declares jobs; real libraries belong in the code base


@dataclass
class _Compiled:
    sha256: str
    jobs: dict[str, ScheduledJob]
    last_used: float


_compiled: dict[str, _Compiled] = {}  # per process: script name → its module, compiled once per source hash
_compiled_lock = threading.Lock()  # task code and the local-job thread share the cache


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def compile_script(name: str, source: str) -> list[ScheduledJob]:
    """Compile and load a script, returning its jobs; `InvalidScript` says why not, with the line when known."""
    if not isinstance(name, str) or not SCRIPT_NAME.match(name):
        raise InvalidScript(f"script name {name!r} must be 1-64 letters, digits, '-' or '_'")
    if not isinstance(source, str) or not source.strip():
        raise InvalidScript("the source is empty")
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise InvalidScript(f"the source is larger than {MAX_SOURCE_BYTES // 1024} KiB")
    filename = f"<script {name}>"
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        raise InvalidScript(f"{type(exc).__name__}: {exc.msg}", exc.lineno) from None
    except ValueError as exc:  # e.g. a NUL byte
        raise InvalidScript(str(exc)) from None
    namespace = {"__name__": f"{SCRIPT_JOB_PREFIX}{name}", "__file__": filename, "__builtins__": builtins}
    with collecting_script_jobs(name) as jobs:
        try:
            exec(code, namespace)
        except (Exception, SystemExit) as exc:
            reason = str(exc) if isinstance(exc, SchedulingError) else f"{type(exc).__name__}: {exc}"
            raise InvalidScript(reason, _line_in(exc.__traceback__, filename)) from None
    if not jobs:
        raise InvalidScript("the script declares no @scheduled function")
    return list(jobs)


def list_scripts() -> QuerySet[CustomScript]:
    return CustomScript.objects.all()


def get_script(name: str) -> CustomScript:
    script = CustomScript.objects.filter(name=name).first()
    if script is None:
        raise ScriptNotFound(f"no custom script is named {name!r}")
    return script


def create_script(name: str, source: str, user: AbstractBaseUser | None, enabled: bool = True) -> CustomScript:
    _require_uploads_enabled()
    jobs = compile_script(name, source)
    try:
        with transaction.atomic():
            script = CustomScript.objects.create(
                name=name, source=source, sha256=source_hash(source), enabled=enabled, updated_by=user
            )
            _audit(script, ScriptAction.CREATED, user)
            sync_script_jobs(name, jobs, enabled)
    except IntegrityError:
        raise ScriptExists(f"a custom script named {name!r} exists already; PUT changes it") from None
    return script


def update_script(
    name: str, user: AbstractBaseUser | None, source: str | None = None, enabled: bool | None = None
) -> CustomScript:
    """Replace the source and/or switch the script on or off; omitted parts keep their value."""
    _require_uploads_enabled()
    with transaction.atomic():
        script = CustomScript.objects.select_for_update().filter(name=name).first()
        if script is None:
            raise ScriptNotFound(f"no custom script is named {name!r}")
        jobs = compile_script(name, script.source if source is None else source)
        actions = []
        if source is not None:
            script.source, script.sha256 = source, source_hash(source)
            actions.append(ScriptAction.UPDATED)
        if enabled is not None and enabled != script.enabled:
            script.enabled = enabled
            actions.append(ScriptAction.ENABLED if enabled else ScriptAction.DISABLED)
        script.updated_by = user
        script.save()
        for action in actions:
            _audit(script, action, user)
        sync_script_jobs(name, jobs, script.enabled)
    return script


def delete_script(name: str, user: AbstractBaseUser | None) -> None:
    _require_uploads_enabled()
    with transaction.atomic():
        script = CustomScript.objects.select_for_update().filter(name=name).first()
        if script is None:
            raise ScriptNotFound(f"no custom script is named {name!r}")
        _audit(script, ScriptAction.DELETED, user)
        script.delete()
        delete_script_jobs(name)


def find_script_job(job_name: str) -> ScheduledJob | None:
    """The job as the enabled script stored now declares it; None when the script is gone or disabled."""
    script_name = job_name.removeprefix(SCRIPT_JOB_PREFIX).split(".", 1)[0]
    stored = CustomScript.objects.filter(name=script_name, enabled=True).values("sha256", "source").first()
    if stored is None:
        return None
    with _compiled_lock:
        compiled = _compiled.get(script_name)
        if compiled is None or compiled.sha256 != stored["sha256"]:
            jobs = compile_script(script_name, stored["source"])
            filename = f"<script {script_name}>"  # so tracebacks of its runs show the script's lines
            linecache.cache[filename] = (len(stored["source"]), None, stored["source"].splitlines(True), filename)
            compiled = _compiled[script_name] = _Compiled(stored["sha256"], {job.name: job for job in jobs}, 0.0)
        compiled.last_used = time.monotonic()
        return compiled.jobs.get(job_name)


def expire_compiled_scripts(idle_for: timedelta) -> int:
    """Forget the compiled scripts this process has not used for `idle_for`; they are compiled again on use."""
    oldest_kept = time.monotonic() - idle_for.total_seconds()
    with _compiled_lock:
        idle = [name for name, compiled in _compiled.items() if compiled.last_used < oldest_kept]
        for name in idle:
            del _compiled[name]
            linecache.cache.pop(f"<script {name}>", None)
    return len(idle)


def _require_uploads_enabled() -> None:
    if not settings.CUSTOM_SCRIPTS_ENABLED:
        raise CustomScriptsDisabled("custom scripts are switched off on this node (CUSTOM_SCRIPTS_ENABLED=false)")


def _audit(script: CustomScript, action: ScriptAction, user: AbstractBaseUser | None) -> None:
    ScriptAudit.objects.create(
        script_name=script.name, action=action, sha256=script.sha256, user=user,
        username=user.get_username() if user is not None else "",
    )


def _line_in(trace: TracebackType | None, filename: str) -> int | None:
    """The line of the script where loading failed: its innermost frame in the traceback."""
    line = None
    while trace is not None:
        if trace.tb_frame.f_code.co_filename == filename:
            line = trace.tb_lineno
        trace = trace.tb_next
    return line
