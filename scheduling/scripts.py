"""Custom scripts: Python a superuser uploads at run time, declaring `@scheduled` jobs, with no restart.

A script is checked before anything is stored, statically, in the process that receives it (the web process):
it must compile, and declare at least one top-level `@scheduled` function whose arguments are literals and whose
schedule is valid; otherwise nothing is written or scheduled. Its code — top level included — runs only in the
scheduler and worker processes, never in the web process. With CUSTOM_SCRIPTS_ENABLED=false a node neither
accepts scripts nor runs them: beat leaves their rows out and workers resolve no script job. Saving it
syncs its jobs into PeriodicTask rows and moves django-celery-beat's change marker: beats reload within
their loop interval (5 s) and every worker process's local-job runner within its poll. Workers read the
source from the database when a job runs and keep the compiled module per process, keyed by its hash.
"""

from __future__ import annotations

import ast
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

from scheduling.exceptions import CustomScriptsDisabled, InvalidScript, SchedulingError, ScriptExists, ScriptNotFound
from scheduling.models import CustomScript, ScriptAction, ScriptAudit
from scheduling.registry import MAX_NAME_LENGTH, SCRIPT_JOB_PREFIX, ScheduledJob, collecting_script_jobs
from scheduling.schedules import make_schedule
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


SCHEDULED_ARGUMENTS = ("cron", "every_seconds", "clustered", "name", "transactional", "timezone")


def _compiled_code(name: str, source: str):
    if not isinstance(name, str) or not SCRIPT_NAME.match(name):
        raise InvalidScript(f"script name {name!r} must be 1-64 letters, digits, '-' or '_'")
    if not isinstance(source, str) or not source.strip():
        raise InvalidScript("the source is empty")
    if len(source.encode()) > MAX_SOURCE_BYTES:
        raise InvalidScript(f"the source is larger than {MAX_SOURCE_BYTES // 1024} KiB")
    try:
        return compile(source, f"<script {name}>", "exec")
    except SyntaxError as exc:
        raise InvalidScript(f"{type(exc).__name__}: {exc.msg}", exc.lineno) from None
    except ValueError as exc:  # e.g. a NUL byte
        raise InvalidScript(str(exc)) from None


def check_script(name: str, source: str) -> list[ScheduledJob]:
    """The jobs a script declares, read without running any of it: what the web process may do with a script.

    Only top-level functions count, decorated `@scheduled(...)` with literal arguments; the jobs' functions are
    placeholders (the scheduler and workers compile the real ones with `compile_script`)."""
    _compiled_code(name, source)
    tree = ast.parse(source)
    jobs: dict[str, ScheduledJob] = {}
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for decorator in node.decorator_list:
            if not _names_scheduled(decorator.func if isinstance(decorator, ast.Call) else decorator):
                continue
            if id(node) not in top_level or isinstance(node, ast.ClassDef):
                raise InvalidScript("declare @scheduled functions at the top level of the script", decorator.lineno)
            if not isinstance(decorator, ast.Call):
                raise InvalidScript("write @scheduled(cron=...) or @scheduled(every_seconds=...)", decorator.lineno)
            job = _declared_job(name, node, decorator)
            if job.name in jobs:
                raise InvalidScript(f"two scheduled jobs in this script are named {job.name!r}", decorator.lineno)
            jobs[job.name] = job
    if not jobs:
        raise InvalidScript("the script declares no @scheduled function")
    return list(jobs.values())


def _names_scheduled(expression: ast.expr) -> bool:
    return (isinstance(expression, ast.Name) and expression.id == "scheduled") or (
        isinstance(expression, ast.Attribute) and expression.attr == "scheduled"
    )


def _declared_job(script_name: str, function: ast.FunctionDef | ast.AsyncFunctionDef, call: ast.Call) -> ScheduledJob:
    line = call.lineno  # the decorator's line, as a failure while loading the script reports it
    if len(call.args) > 1 or any(keyword.arg is None for keyword in call.keywords):
        raise InvalidScript("@scheduled takes one cron string and keyword arguments", line)
    try:
        arguments = {keyword.arg: ast.literal_eval(keyword.value) for keyword in call.keywords}
        if call.args:
            arguments["cron"] = ast.literal_eval(call.args[0])
    except (ValueError, TypeError, SyntaxError, RecursionError):
        raise InvalidScript("@scheduled's arguments must be literals (strings, numbers, True/False)", line) from None
    unknown = sorted(set(arguments) - set(SCHEDULED_ARGUMENTS))
    if unknown:
        raise InvalidScript(f"@scheduled has no argument {', '.join(unknown)}", line)
    required = function.args.args[: len(function.args.args) - len(function.args.defaults)] + [
        argument
        for argument, default in zip(function.args.kwonlyargs, function.args.kw_defaults, strict=True)
        if default is None
    ]
    if function.args.posonlyargs or required:
        names = [argument.arg for argument in function.args.posonlyargs + required]
        raise InvalidScript(
            f"a scheduled job is called with no arguments, but {function.name} requires {', '.join(names)}", line
        )
    for flag in ("clustered", "transactional"):
        if not isinstance(arguments.get(flag, False), bool):
            raise InvalidScript(f"{flag} must be True or False, got {arguments[flag]!r}", line)
    explicit = arguments.get("name")
    if explicit is not None and not isinstance(explicit, str):
        raise InvalidScript(f"name must be a string, got {explicit!r}", line)
    job_name = f"{SCRIPT_JOB_PREFIX}{script_name}.{explicit or function.name}"
    if not re.match(r"^[A-Za-z0-9_.:-]+$", job_name) or len(job_name) > MAX_NAME_LENGTH:
        raise InvalidScript(f"job name {job_name!r} must be 1-{MAX_NAME_LENGTH} letters, digits and . _ : -", line)
    try:
        schedule = make_schedule(
            arguments.get("cron"), arguments.get("every_seconds"), arguments.get("timezone") or settings.TIME_ZONE
        )
    except SchedulingError as exc:
        raise InvalidScript(str(exc), line) from None
    return ScheduledJob(
        job_name,
        _runs_only_in_workers,
        schedule,
        arguments.get("clustered", True),
        arguments.get("transactional", False),
    )


def _runs_only_in_workers() -> None:
    raise SchedulingError("a statically checked script job is run by the workers, which compile the script")


def compile_script(name: str, source: str) -> list[ScheduledJob]:
    """Compile and load a script, returning its jobs; `InvalidScript` says why not, with the line when known.
    Runs the script's top-level code: for the scheduler and worker processes only (`check_script` in the web)."""
    code = _compiled_code(name, source)
    filename = f"<script {name}>"
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
    jobs = check_script(name, source)
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
        jobs = check_script(name, script.source if source is None else source)
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
    """The job as the enabled script stored now declares it; None when the script is gone or disabled, or when
    custom scripts are switched off on this node."""
    if not settings.CUSTOM_SCRIPTS_ENABLED:
        return None
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
        script_name=script.name,
        action=action,
        sha256=script.sha256,
        user=user,
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
