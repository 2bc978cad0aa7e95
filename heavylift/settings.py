"""Heavylift settings: the one place that reads the environment.

Every setting comes from an environment variable with a documented default (see `.env.example`).
A bad value stops start-up with one line naming the variable and what it accepts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise ImproperlyConfigured(f"{name} is not set (see .env.example; `make demo` sets it up for you)")
    return default


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {os.environ[name]!r}")


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_seconds_list(name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """`1,5,30`: non-negative numbers of seconds, comma-separated."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be comma-separated seconds like 1,5,30, got {raw!r}") from None
    if any(value < 0 for value in values):
        raise ImproperlyConfigured(f"{name} must not be negative, got {raw!r}")
    return values


def env_identifier(name: str, default: str) -> str:
    value = env_str(name, default)
    if not _IDENTIFIER.match(value):
        raise ImproperlyConfigured(f"{name} must be 1-64 letters, digits, '-' or '_' (it names a queue), got {value!r}")
    return value


def env_json_object(name: str, default: dict) -> dict:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object, got {raw!r}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def env_url(name: str, schemes: tuple[str, ...]) -> str:
    value = env_str(name)
    if urlsplit(value).scheme not in schemes:
        raise ImproperlyConfigured(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return value


# --- Core -----------------------------------------------------------------------------------------
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
# The placeholder of .env.example (and its like) keys every token's HMAC and session: outside DEBUG, refused.
PLACEHOLDER_SECRET_KEYS = {"change-me", "changeme", "secret", "insecure", "django-insecure"}
if not DEBUG and (SECRET_KEY.strip().lower() in PLACEHOLDER_SECRET_KEYS or len(SECRET_KEY) < 16):
    raise ImproperlyConfigured(
        "SECRET_KEY is a placeholder or shorter than 16 characters; set a random one, e.g. "
        "python -c 'import secrets; print(secrets.token_hex(24))' (DEBUG=true accepts it)"
    )
ALLOWED_HOSTS = [h.strip() for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

# --- Behind a TLS-terminating proxy (docs/security.md) --------------------------------------------
# Trust the proxy's X-Forwarded-Proto / X-Forwarded-Host, so that URLs the server hands out (export manifests,
# Content-Location, paging links) say https:// and the public host. Only behind a proxy that sets them.
TRUST_X_FORWARDED_PROTO = env_bool("TRUST_X_FORWARDED_PROTO", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if TRUST_X_FORWARDED_PROTO else None
USE_X_FORWARDED_HOST = env_bool("USE_X_FORWARDED_HOST", False)
# Outside DEBUG: cookies only over HTTPS, HSTS on HTTPS answers, no MIME sniffing, no framing.
SECURE_COOKIES = env_bool("SECURE_COOKIES", not DEBUG)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)  # sent on HTTPS answers only
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)  # true where the server itself should send http to https
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

DATABASE_URL = env_url("DATABASE_URL", ("postgres", "postgresql"))
REDIS_URL = env_url("REDIS_URL", ("redis", "rediss"))
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
# libpq's client-side timeouts, so a connection to a database host that vanished (powered off, cut off) fails
# in seconds instead of when TCP gives up (~15 min with data in flight, ~2 h idle on Linux's defaults).
# Parameters in DATABASE_URL's query string win. Measured effect and the server's side: docs/cluster.md.
DATABASE_CLIENT_TIMEOUTS = {
    "connect_timeout": env_int("DATABASE_CONNECT_TIMEOUT_SECONDS", 10, minimum=2),  # libpq's minimum is 2
    "keepalives": 1 if env_bool("DATABASE_KEEPALIVES", True) else 0,
    "keepalives_idle": env_int("DATABASE_KEEPALIVES_IDLE_SECONDS", 10, minimum=1),  # idle this long: probe
    "keepalives_interval": env_int("DATABASE_KEEPALIVES_INTERVAL_SECONDS", 5, minimum=1),  # between probes
    "keepalives_count": env_int("DATABASE_KEEPALIVES_COUNT", 3, minimum=1),  # unanswered probes: dead (idle: 25 s)
    # Sent data unacknowledged this long: the connection is dead (0: the kernel's ~15 min retransmissions).
    "tcp_user_timeout": env_int("DATABASE_TCP_USER_TIMEOUT_MS", 30_000),
}
# The server's side of the same, set by every session for itself (the settings are per session), so a
# process that dies with its host frees its backend, connection slot and row locks in seconds whatever
# postgresql.conf says: a dead client's open transaction otherwise holds its locks (a job row, a chunk row)
# until the server's own TCP gives up, and every worker and maintenance pass that needs them waits as long.
DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = env_int("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", 60, minimum=0)
DATABASE_SERVER_TIMEOUTS = {
    "tcp_keepalives_idle": DATABASE_CLIENT_TIMEOUTS["keepalives_idle"],
    "tcp_keepalives_interval": DATABASE_CLIENT_TIMEOUTS["keepalives_interval"],
    "tcp_keepalives_count": DATABASE_CLIENT_TIMEOUTS["keepalives_count"],
    "tcp_user_timeout": DATABASE_CLIENT_TIMEOUTS["tcp_user_timeout"],
    "idle_in_transaction_session_timeout": DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS * 1000,  # ms; 0: never
}
DATABASES["default"]["OPTIONS"] = {
    **DATABASE_CLIENT_TIMEOUTS,
    "options": " ".join(f"-c {name}={value}" for name, value in DATABASE_SERVER_TIMEOUTS.items()),
    **DATABASES["default"].get("OPTIONS", {}),
}

# --- Cluster identity -----------------------------------------------------------------------------
NODE_ID = env_identifier("NODE_ID", "Master")  # the logical node, shared by its machines; names its batch queue
MODULE_ID = env_identifier("MODULE_ID", "batch")
REPLACE_HYPHENS_WITH_PERIODS = env_bool("REPLACE_HYPHENS_WITH_PERIODS", False)
JOB_SCHEDULING = env_bool("JOB_SCHEDULING", True)  # false: this node leaves scheduling to the others
BATCH_MAX_THREADS = env_int("BATCH_MAX_THREADS", os.cpu_count() or 2, minimum=1)  # worker processes
# The default cap of chunks one reindex, export or import runs at once: a chunk keeps about one core busy,
# so half the cores are left to the live API (each job's setting below says what that cost and bought).
HALF_THE_CPUS = max(1, (os.cpu_count() or 2) // 2)

# --- Web process (Procfile, `make demo`) -----------------------------------------------------------
BIND_ADDRESS = env_str("BIND_ADDRESS", "127.0.0.1")  # only this machine unless told otherwise (0.0.0.0)
PORT = env_int("PORT", 8000, minimum=1)

# --- Flower ---------------------------------------------------------------------------------------
FLOWER_USER = env_str("FLOWER_USER", "admin")
FLOWER_PASSWORD = os.environ.get("FLOWER_PASSWORD", "")  # empty: Flower refuses to start
FLOWER_PORT = env_int("FLOWER_PORT", 5555, minimum=1)
# Prometheus `/metrics`: with a directory, every gunicorn and Celery process writes its counters and histograms
# there and `/metrics` adds them up (prometheus-client's multiprocess mode; empty it when the stack starts).
# Without one, `/metrics` shows the web process's own counters and the cluster's gauges.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR:
    Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

# --- Django ---------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_celery_beat",
    "blobstore",
    "jobsite",
    "batch",
    "scheduling",
    "fhirstore",
    "fhirstore.terminology",
    "fhirjobs.bulkexport",
    "fhirjobs.bulkimport",
    "fhirjobs.reindex",
    "fhirjobs.deleteexpunge",
    "fhirjobs.expunge",
    "fhirjobs.merge",
    "fhirjobs.bulkpatch",
    "fhirjobs.terminology",
    "heavylift",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "heavylift.metrics.RequestLatencyMiddleware",  # outermost but one: a refused request's time counts too
    "django.contrib.sessions.middleware.SessionMiddleware",
    "heavylift.edge.HostileInputMiddleware",  # 400/413 in each API's error shape before a view sees bad input
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "heavylift.urls"
WSGI_APPLICATION = "heavylift.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
WHITENOISE_USE_FINDERS = True  # admin CSS without a collectstatic step

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "jobsite.auth.BearerOrTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

# LOG_FORMAT=json: one JSON object per line (heavylift.logs), with the node, and the job, chunk and step of the
# chunk a worker runs (batch.log_context); plain: the readable default.
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "heavylift.logs.JsonFormatter"},
    },
    "filters": {"chunk": {"()": "batch.log_context.ChunkLogFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["chunk"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# --- Celery ---------------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True  # chunk outcomes live in Postgres; tasks opt in to results
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True  # a message is acknowledged only once its task has run
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # a killed pool process re-queues its message
CELERY_WORKER_PREFETCH_MULTIPLIER = 1  # nothing stranded in a dead worker's buffer
CELERY_WORKER_CONCURRENCY = BATCH_MAX_THREADS
# A Redis blip must not kill the chunks running meanwhile (and charge each an error): their outcome goes to
# PostgreSQL, and the claim makes a redelivered copy of their message harmless.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "scheduling.beat:NodeAwareScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Redis has no real acks: an unacked message comes back after this many seconds (default one hour).
# Lost chunks are recovered from Postgres by maintenance long before that; the broker is only a hint.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=10)
# kombu's Redis transport keeps a queue as one list per priority step and serves the lower step first; a
# message without a priority (every `default` and scheduler task) counts as 0. Two steps: a batch queue's
# work announced again (a retry, a lost worker's chunk, a re-homed job: 0) goes ahead of its new work (9),
# see `batch.queues`. Each step is one more list in every poll, so no more steps than that.
# Redis socket timeouts, for the broker and every client of ours: a call to a Redis host that vanished fails in
# seconds instead of when TCP gives up (a host cut off from Redis held the maintenance pass ~20 s per call).
REDIS_SOCKET_TIMEOUT_SECONDS = env_int("REDIS_SOCKET_TIMEOUT_SECONDS", 10, minimum=2)  # above kombu's 1 s BRPOP
REDIS_SOCKET_CONNECT_TIMEOUT_SECONDS = env_int("REDIS_SOCKET_CONNECT_TIMEOUT_SECONDS", 5, minimum=1)
REDIS_HEALTH_CHECK_INTERVAL_SECONDS = env_int(
    "REDIS_HEALTH_CHECK_INTERVAL_SECONDS", 10, minimum=1
)  # PING when idle this long
REDIS_CLIENT_OPTIONS = {
    "socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
    "socket_connect_timeout": REDIS_SOCKET_CONNECT_TIMEOUT_SECONDS,
    "socket_keepalive": True,
    "health_check_interval": REDIS_HEALTH_CHECK_INTERVAL_SECONDS,
}
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_VISIBILITY_TIMEOUT,
    "priority_steps": [0, 9],
    **REDIS_CLIENT_OPTIONS,
}
CELERY_REDIS_SOCKET_TIMEOUT = REDIS_SOCKET_TIMEOUT_SECONDS  # the result backend's
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = REDIS_SOCKET_CONNECT_TIMEOUT_SECONDS
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}

# --- Batch ----------------------------------------------------------------------------------------
BATCH_MAINTENANCE_INTERVAL_SECONDS = env_int("BATCH_MAINTENANCE_INTERVAL_SECONDS", 5, minimum=1)  # safety-net pass
BATCH_LEASE_SECONDS = env_int("BATCH_LEASE_SECONDS", 30, minimum=2)  # a dead worker's chunk is retried after this
BATCH_MAX_CHUNK_RETRIES = env_int("BATCH_MAX_CHUNK_RETRIES", 3)  # as the reference: the 4th error fails the chunk
BATCH_RETRY_LATER_SECONDS = env_int("BATCH_RETRY_LATER_SECONDS", 60)  # RetryChunkLater without a delay
BATCH_REANNOUNCE_AFTER_SECONDS = env_int("BATCH_REANNOUNCE_AFTER_SECONDS", 30, minimum=1)  # lost-message recovery
# The retry after a chunk's 1st, 2nd, 3rd... error waits this long (the last value repeats).
BATCH_RETRY_BACKOFF_SECONDS = env_seconds_list("BATCH_RETRY_BACKOFF_SECONDS", (1.0, 5.0, 30.0))
BATCH_MAX_CHUNK_SECONDS = env_int("BATCH_MAX_CHUNK_SECONDS", 3600, minimum=1)  # a chunk running longer is hung
BATCH_PURGE_ENDED_AFTER_DAYS = env_int("BATCH_PURGE_ENDED_AFTER_DAYS", 7, minimum=1)  # ended jobs are deleted then
# Diagnostic no-op jobs (DIAGNOSTIC_NOOP, DIAGNOSTIC_NOOP_GATED) exist only when this is true (tests, `make demo`).
BATCH_DIAGNOSTIC_JOBS = env_bool("BATCH_DIAGNOSTIC_JOBS", False)
# Job definitions a client (not an operator) may start through POST /control/jobs; comma-separated, default none.
BATCH_CLIENT_JOB_DEFINITIONS = [d.strip() for d in env_str("BATCH_CLIENT_JOB_DEFINITIONS", "").split(",") if d.strip()]
# A node none of whose batch workers has recorded a heartbeat for this long is dead: maintenance moves
# its unfinished jobs to a live node. Workers beat every third of it.
BATCH_NODE_TIMEOUT_SECONDS = env_int("BATCH_NODE_TIMEOUT_SECONDS", 60, minimum=3)
# One maintenance pass at a time holds a lease this long, renewed as it goes; a holder that died or froze
# stops holding it after this, on the database's clock (batch/maintenance.py, docs/cluster.md).
BATCH_MAINTENANCE_LEASE_SECONDS = env_int("BATCH_MAINTENANCE_LEASE_SECONDS", 20, minimum=2)
BATCH_FLOWER_URL = env_str("BATCH_FLOWER_URL", f"http://127.0.0.1:{FLOWER_PORT}")  # admin links chunks' tasks here
# Celery's Django fixup closes the database connection around every task unless this is set; a fresh
# PostgreSQL connection per chunk would cost more than the chunk. Reopened after this many tasks.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=1)

# --- Hostile input (heavylift/edge.py, docs/security.md) ---------------------------------------------
API_MAX_JSON_DEPTH = env_int("API_MAX_JSON_DEPTH", 100, minimum=2)  # deeper JSON bodies get 400, not a stack overflow
CONTROL_MAX_REQUEST_BYTES = env_int("CONTROL_MAX_REQUEST_BYTES", 1024 * 1024, minimum=1024)  # larger: 413

# --- FHIR store -----------------------------------------------------------------------------------
FHIR_ALLOW_ANONYMOUS_READ = env_bool("FHIR_ALLOW_ANONYMOUS_READ", False)  # reads without a token or session
FHIR_FULL_VALIDATION = env_bool("FHIR_FULL_VALIDATION", False)  # validate every write against the R4B models
# true: bulk imports and reindexes extract the built-in search parameters' index rows inside PostgreSQL
# (fhirstore.index_sql). Off by default: on the 2-core bench it makes a reindex 1.4-1.6x faster but an import
# slower (docs/reindex.md and docs/import.md, Performance), and the Python extraction is what single writes use.
FHIR_INDEX_IN_DATABASE = env_bool("FHIR_INDEX_IN_DATABASE", False)
# Synthea's largest single-patient transaction bundles are ~20 MB; anything beyond this is refused (413).
FHIR_MAX_REQUEST_BYTES = env_int("FHIR_MAX_REQUEST_BYTES", 32 * 1024 * 1024, minimum=1024)
# Bodies up to the larger API limit are read by Django (the edge checks them first); the admin's forms too.
DATA_UPLOAD_MAX_MEMORY_SIZE = max(FHIR_MAX_REQUEST_BYTES, CONTROL_MAX_REQUEST_BYTES)
FHIR_DEFAULT_PAGE_SIZE = env_int("FHIR_DEFAULT_PAGE_SIZE", 20, minimum=1)  # search page size without _count
FHIR_MAX_PAGE_SIZE = env_int("FHIR_MAX_PAGE_SIZE", 1000, minimum=1)  # largest _count honoured
# Ids kept per cached search (HAPI's default fetch limit): a broader search is cut there, with a warning.
FHIR_SEARCH_MAX_RESULTS = env_int("FHIR_SEARCH_MAX_RESULTS", 10000, minimum=1)
# Cached searches (and the paging links into them) live this long, then the clustered job deletes them.
EXPIRE_SEARCH_RESULTS_AFTER_MINUTES = env_int("EXPIRE_SEARCH_RESULTS_AFTER_MINUTES", 60, minimum=1)
# A search by a SearchParameter whose reindex has not completed: `refuse` (400) or `warn` (the matches so
# far, with an OperationOutcome warning in the Bundle).
FHIR_SEARCH_WHILE_INDEXING = env_str("FHIR_SEARCH_WHILE_INDEXING", "refuse").lower()
if FHIR_SEARCH_WHILE_INDEXING not in ("refuse", "warn"):
    raise ImproperlyConfigured(f"FHIR_SEARCH_WHILE_INDEXING must be refuse or warn, got {FHIR_SEARCH_WHILE_INDEXING!r}")
# Chunks of one reindex job running at once (0: as many as there are workers). A chunk keeps about one core
# busy: its worker extracts while its PostgreSQL backend waits, then the backend reads the stored rows to
# compare, so half the cores leaves the other half to the live API. On 2 cores, 1 chunk kept the read p99
# ratio at 1.28–1.39 where 2 made it 1.73 (docs/reindex.md, Performance).
REINDEX_MAX_CONCURRENT_CHUNKS = env_int("REINDEX_MAX_CONCURRENT_CHUNKS", HALF_THE_CPUS)
# Chunks of one delete-expunge (or expunge) job running at once (0: as many as there are workers); as many as
# the cores. Measured on 2 cores at 200k (docs/deleteexpunge.md, Performance; 2026-12-07, two pairs of runs):
# 2 pages at once deleted 2.0-2.5x as fast as 1 (0.87 and 1.07 of plain SQL where 1 made 0.18 and 0.28), and
# the read p99 during it was no worse (1.56-1.58x idle against 1.61-2.14x; one spinning core: 1.30-1.93x).
# A page is mostly its PostgreSQL backend's index maintenance, waiting on the disk as much as on a core.
DELETE_EXPUNGE_MAX_CONCURRENT_CHUNKS = env_int("DELETE_EXPUNGE_MAX_CONCURRENT_CHUNKS", os.cpu_count() or 2)
# A snapshot hold (an export reading the store at its transactionTime keeps expunges off its types; see
# fhirstore/snapshots.py) lapses this long after it was taken or last renewed (each export chunk renews it): a
# reader that died without releasing blocks expunges for at most this long.
SNAPSHOT_HOLD_SECONDS = env_int("SNAPSHOT_HOLD_SECONDS", 3600, minimum=1)
# Patient/$merge rewrites up to this many referring resources in the request itself (HAPI's limit: 512); above
# it the client asks with Prefer: respond-async and a MERGE job does it. Also the job's default page size.
MERGE_SYNC_MAX_RESOURCES = env_int("MERGE_SYNC_MAX_RESOURCES", 512)

# --- Scheduling -----------------------------------------------------------------------------------
# Clustered scheduled jobs go through this queue, consumed only by `manage.py run_scheduler_worker`,
# so batch chunks never delay scheduled work and scheduled work never delays chunks.
SCHEDULER_QUEUE = env_identifier("SCHEDULER_QUEUE", "scheduled-jobs")
SCHEDULER_THREAD_COUNT = env_int("SCHEDULER_THREAD_COUNT", 4, minimum=1)  # scheduled jobs a node runs at once
SCHEDULER_RUN_RETENTION_DAYS = env_int("SCHEDULER_RUN_RETENTION_DAYS", 7, minimum=1)  # JobRun rows kept
# Modules declaring @scheduled jobs besides each installed app's `periodic.py` (comma-separated dotted paths).
SCHEDULING_JOB_MODULES = [m.strip() for m in env_str("SCHEDULING_JOB_MODULES", "").split(",") if m.strip()]
CUSTOM_SCRIPTS_ENABLED = env_bool("CUSTOM_SCRIPTS_ENABLED", False)  # superusers may upload scheduled scripts

# --- Bulk export ----------------------------------------------------------------------------------
BULK_EXPORT_CHUNK_SIZE = env_int("BULK_EXPORT_CHUNK_SIZE", 10000, minimum=1)  # resources per chunk and file
# Files per page of a partial manifest (`allowPartialManifests`): a longer list is paged with `link: next`.
BULK_EXPORT_MANIFEST_PAGE_FILES = env_int("BULK_EXPORT_MANIFEST_PAGE_FILES", 1000, minimum=1)
# Patient blocks per file of an export with `organizeOutputBy=Patient` (a block is never split across files).
BULK_EXPORT_PATIENTS_PER_FILE = env_int("BULK_EXPORT_PATIENTS_PER_FILE", 100, minimum=1)
# Row ranges or pages of patients per fetch chunk of an export (BULK_EXPORT v4), which `expand` splits into one write
# chunk each; recorded in the job at the kick-off. Each fetch chunk is an expand chunk the gate waits for before any
# file is written: at 8 (version 3's), a 1M store's first file waited for 13 of them.
BULK_EXPORT_PAGES_PER_CHUNK = env_int("BULK_EXPORT_PAGES_PER_CHUNK", 128, minimum=1)
# Export files are deleted this long after their export ended (HAPI keeps them 2 hours); `Expires` says when.
BULK_EXPORT_RETENTION_SECONDS = env_int("BULK_EXPORT_RETENTION_SECONDS", 2 * 3600, minimum=1)
BULK_EXPORT_MAX_RUNNING_PER_USER = env_int("BULK_EXPORT_MAX_RUNNING_PER_USER", 3, minimum=1)  # one more gets 429
# Chunks of one export running at once (0: as many as there are worker processes). A write chunk is one COPY
# stream: its PostgreSQL backend turns jsonb into text at a core's speed, as a raw COPY does. Half the cores
# leaves the other half to the live API: on the 2-core bench, 1 chunk exported 1M at 0.62 of a raw COPY with
# read p99 1.26x idle (the raw COPY itself: 1.21x); 2 chunks gained 6 % and made it 1.90x (docs/export.md).
BULK_EXPORT_MAX_CONCURRENT_CHUNKS = env_int("BULK_EXPORT_MAX_CONCURRENT_CHUNKS", HALF_THE_CPUS)
# Where export files live: any Django storage backend and its options as JSON. By default the database
# (blobstore: every host that reaches PostgreSQL serves every file, nothing else to run); an S3-compatible
# store (blobstore.s3.GzipS3Storage: S3Storage with its objects gzip-compressed, a tenth of the bytes to send
# and store; or S3Storage itself) for large exports; the file system (FileSystemStorage, its default
# location MEDIA_ROOT/bulkexport) for one host only (docs/export.md, "Files, storage, expiry").
FILE_SYSTEM_STORAGE = "django.core.files.storage.FileSystemStorage"
BULK_EXPORT_STORAGE_BACKEND = env_str("BULK_EXPORT_STORAGE_BACKEND", "blobstore.storage.DatabaseStorage")
BULK_EXPORT_STORAGE_OPTIONS = env_json_object(
    "BULK_EXPORT_STORAGE_OPTIONS",
    {"location": str(MEDIA_ROOT / "bulkexport")} if BULK_EXPORT_STORAGE_BACKEND == FILE_SYSTEM_STORAGE else {},
)
# Downloads from a storage that makes presigned URLs (S3Storage with querystring_auth, their lifetime its
# querystring_expire) are answered with a 302 to one, after the token is checked; false: streamed through the
# web process, as from the database or the file system.
BULK_EXPORT_DOWNLOAD_REDIRECT = env_bool("BULK_EXPORT_DOWNLOAD_REDIRECT", True)
# `$bulk-publish` (Bulk Data STU4 ballot): named exports refreshed every cadence and served as a static, cacheable
# manifest. A JSON object {name: {"parameters": "<kick-off query, e.g. _type=Organization,Practitioner>",
# "cadence_seconds": 86400}}; empty: nothing is published (docs/export.md, "$bulk-publish").
BULK_PUBLISH = env_json_object("BULK_PUBLISH", {})
# The Bulk Data STU4 ballot's export protocol: `post-only` refuses GET kick-offs and comma-joined repeats, and its
# manifests carry `outcome` (not `error`), `manifestType` and `outputFormat` and drop `request`. `both` (until
# STU4 is published): STU3's protocol, GET or POST, as today's clients (SMART's bulk-data-client, smart-fetch) use.
BULK_EXPORT_KICKOFF = env_choice("BULK_EXPORT_KICKOFF", "both", ("both", "post-only"))
# --- Terminology (docs/terminology.md) ---------------------------------------------------------------
# Codes an on-the-fly $expand returns in one answer (a larger expansion: 422 too-costly, page it with count).
TERMINOLOGY_EXPANSION_MAX_CODES = env_int("TERMINOLOGY_EXPANSION_MAX_CODES", 20000, minimum=1)
# Concepts one $apply-codesystem-delta-add or -remove takes synchronously (more: upload a new version).
TERMINOLOGY_DELTA_MAX_CONCEPTS = env_int("TERMINOLOGY_DELTA_MAX_CONCEPTS", 1000, minimum=1)
# Concepts an upload writes per transaction (COPY; a re-run of the load step skips the chunks written).
TERMINOLOGY_UPLOAD_CHUNK_CONCEPTS = env_int("TERMINOLOGY_UPLOAD_CHUNK_CONCEPTS", 2000, minimum=1)
# Chunks of one terminology job at once (0: as many as workers); half the CPUs, as the other jobs. An upload's
# steps are one chunk each (the closure is built level by level); a delete has one chunk per table.
TERMINOLOGY_UPLOAD_MAX_CONCURRENT_CHUNKS = env_int("TERMINOLOGY_UPLOAD_MAX_CONCURRENT_CHUNKS", HALF_THE_CPUS)
# --- Bulk import ----------------------------------------------------------------------------------
BULK_IMPORT_CHUNK_SIZE = env_int("BULK_IMPORT_CHUNK_SIZE", 1000, minimum=1)  # NDJSON lines per load chunk
# URL prefixes $import / $bulk-submit may fetch from (comma-separated); none by default: nothing is fetched.
BULK_IMPORT_ALLOWED_SOURCES = [p.strip() for p in env_str("BULK_IMPORT_ALLOWED_SOURCES", "").split(",") if p.strip()]
# Header names a $bulk-submit fileRequestHeader may set (comma-separated, any case); others are a 400. Never
# Host, Cookie or hop-by-hop headers: they would steer the request, not authenticate it.
BULK_IMPORT_REQUEST_HEADERS = [
    h.strip().lower() for h in env_str("BULK_IMPORT_REQUEST_HEADERS", "Authorization").split(",") if h.strip()
]
# file:// inputs are allowed only under this directory; unset: never.
BULK_IMPORT_FILE_ROOT = env_str("BULK_IMPORT_FILE_ROOT", "")
BULK_IMPORT_MAX_FILE_BYTES = env_int("BULK_IMPORT_MAX_FILE_BYTES", 8 * 1024**3, minimum=1)  # per input, decompressed
BULK_IMPORT_MAX_LINE_BYTES = env_int("BULK_IMPORT_MAX_LINE_BYTES", 16 * 1024**2, minimum=1024)  # longer: a bad line
# How long a source that fails (network, 5xx, 429) is tried again, with backoff, before the import fails: a
# proxy or object-store restart fits in it (0: one attempt). The window starts again once lines flow.
BULK_IMPORT_SOURCE_RETRY_SECONDS = env_int("BULK_IMPORT_SOURCE_RETRY_SECONDS", 60)
# A failed or cancelled import keeps its unfinished chunks' raw lines and its source credentials this long, so an
# operator can restart it where it stopped; then both go (patient data and secrets). A completed one's at once.
BULK_IMPORT_RESTART_WINDOW_SECONDS = env_int("BULK_IMPORT_RESTART_WINDOW_SECONDS", 86_400, minimum=0)
# A reference neither literal nor resolvable (e.g. `urn:uuid:` of a resource nowhere to be found): stored
# verbatim with a warning, or (true) the line is rejected.
BULK_IMPORT_UNRESOLVED_REFERENCE_IS_ERROR = env_bool("BULK_IMPORT_UNRESOLVED_REFERENCE_IS_ERROR", False)
# What an import checks of each line: `full`, as a REST write (R4B validation too when FHIR_FULL_VALIDATION), or
# `structure`, only what the store needs (JSON object, known type, id, meta, references): R4B validation costs
# ~113 us a resource, more than the rest of the import's Python (~60 us); the structural checks ~12 us.
BULK_IMPORT_VALIDATION = env_choice("BULK_IMPORT_VALIDATION", "full", ("structure", "full"))
# Chunks of one import at once (0: as many as workers). Half the CPUs, as for export and reindex: on 2 cores
# one chunk cost 10-14 % of the throughput and cut the read p99 during the import from 2.3-2.4x to 1.6-1.8x.
BULK_IMPORT_MAX_CONCURRENT_CHUNKS = env_int("BULK_IMPORT_MAX_CONCURRENT_CHUNKS", HALF_THE_CPUS)
# Allowed $bulk-submit submitters as system|value (comma-separated); empty: any authenticated importer.
BULK_SUBMIT_ALLOWED_SUBMITTERS = [
    s.strip() for s in env_str("BULK_SUBMIT_ALLOWED_SUBMITTERS", "").split(",") if s.strip()
]
# A `$bulk-submit` with `oauthMetadataUrl`: this server gets a token from the provider's authorization server by
# OAuth client credentials and sends it with every fetch of the submission. The client is BULK_SUBMIT_CLIENT_ID,
# authenticated by a signed assertion (SMART Backend Services' private_key_jwt) when BULK_SUBMIT_CLIENT_JWK holds a
# private JWK (RS384 or ES384), else by BULK_SUBMIT_CLIENT_SECRET (HTTP Basic); none set: such a submit is a 400.
BULK_SUBMIT_CLIENT_ID = env_str("BULK_SUBMIT_CLIENT_ID", "")
BULK_SUBMIT_CLIENT_SECRET = env_str("BULK_SUBMIT_CLIENT_SECRET", "")
BULK_SUBMIT_CLIENT_JWK = env_json_object("BULK_SUBMIT_CLIENT_JWK", {})
# A `$bulk-submit` with `fileEncryptionKey`: the provider encrypts its manifest and files (JWE) and sends their key
# encrypted to this private JWK (RSA or EC; RSA-OAEP(-256) or ECDH-ES), whose public half it was given out of band.
# Unset: such a submit is a 400. Every web and worker host needs the same key.
BULK_SUBMIT_FILE_DECRYPTION_JWK = env_json_object("BULK_SUBMIT_FILE_DECRYPTION_JWK", {})
BULK_SUBMIT_TOKEN_SCOPE = env_str("BULK_SUBMIT_TOKEN_SCOPE", "system/*.rs")  # what the token asks to read
# A submitter's next submission while one of its submissions runs is a 429 with this Retry-After.
BULK_SUBMIT_RETRY_AFTER_SECONDS = env_int("BULK_SUBMIT_RETRY_AFTER_SECONDS", 60, minimum=1)
# An object store gets one PUT per export file: boto3's defaults cut a file over 8 MiB (a 10,000-resource file is
# ~11 MB) into a multipart upload (3-4 requests) run by a pool of 10 threads started for every file. One PUT from
# the process itself halved the client's CPU per 11 MB file (50 -> 26 ms, SeaweedFS on a loaded 2-core machine;
# the wall time there is the store's: docs/export.md, Per storage). Larger files still go in 8 MiB parts, one
# at a time.
S3_STORAGES = ("blobstore.s3.GzipS3Storage", "storages.backends.s3.S3Storage")
S3_SINGLE_PUT_BYTES = 64 * 1024**2
BULK_EXPORT_STORAGE_BACKEND_OPTIONS = dict(BULK_EXPORT_STORAGE_OPTIONS)
if BULK_EXPORT_STORAGE_BACKEND in S3_STORAGES and "transfer_config" not in BULK_EXPORT_STORAGE_OPTIONS:
    from boto3.s3.transfer import TransferConfig

    BULK_EXPORT_STORAGE_BACKEND_OPTIONS["transfer_config"] = TransferConfig(
        use_threads=False, multipart_threshold=S3_SINGLE_PUT_BYTES
    )
# A write chunk of an object-store export reads its row range in two parts and uploads one part's files (from a
# thread of the worker process) while it reads the next from PostgreSQL: the COPY and the upload overlap instead
# of following one another, with one COPY at a time as before (docs/export.md, Per storage). Default: on for an
# object store, off for the database (its writes would need a second connection) and the file system.
BULK_EXPORT_UPLOAD_WHILE_READING = env_bool(
    "BULK_EXPORT_UPLOAD_WHILE_READING", BULK_EXPORT_STORAGE_BACKEND in S3_STORAGES
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},  # Django's defaults, kept
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "bulkexport": {"BACKEND": BULK_EXPORT_STORAGE_BACKEND, "OPTIONS": BULK_EXPORT_STORAGE_BACKEND_OPTIONS},
}

# --- Settings every host must share --------------------------------------------------------------
# Any web host may kick off any job and any worker host may run it, so these must be identical on every
# machine (only NODE_ID, MODULE_ID, BIND_ADDRESS, PORT and the process counts may differ). Each worker reports
# their fingerprint with its heartbeat; at start-up a web or worker process compares its own with the live
# workers' and warns, naming the settings that differ (heavylift.cluster). Per setting a short hash, never the
# value (storage options may hold credentials): {"NAME": "<12 hex>", …} as compact JSON.
CLUSTER_WIDE_SETTINGS = (
    "SECRET_KEY",
    "REPLACE_HYPHENS_WITH_PERIODS",
    "BATCH_LEASE_SECONDS",
    "BATCH_MAX_CHUNK_RETRIES",
    "BATCH_MAX_CHUNK_SECONDS",
    "BATCH_NODE_TIMEOUT_SECONDS",
    "BATCH_DIAGNOSTIC_JOBS",
    "BATCH_CLIENT_JOB_DEFINITIONS",
    "FHIR_ALLOW_ANONYMOUS_READ",
    "FHIR_FULL_VALIDATION",
    "FHIR_INDEX_IN_DATABASE",
    "FHIR_SEARCH_WHILE_INDEXING",
    "REINDEX_MAX_CONCURRENT_CHUNKS",
    "SNAPSHOT_HOLD_SECONDS",
    "BULK_EXPORT_CHUNK_SIZE",
    "BULK_EXPORT_MANIFEST_PAGE_FILES",
    "BULK_EXPORT_PATIENTS_PER_FILE",
    "BULK_EXPORT_PAGES_PER_CHUNK",
    "BULK_EXPORT_RETENTION_SECONDS",
    "BULK_EXPORT_MAX_RUNNING_PER_USER",
    "BULK_EXPORT_MAX_CONCURRENT_CHUNKS",
    "BULK_EXPORT_STORAGE_BACKEND",
    "BULK_EXPORT_STORAGE_OPTIONS",
    "BULK_EXPORT_UPLOAD_WHILE_READING",
    "BULK_EXPORT_KICKOFF",
    "BULK_PUBLISH",
    "BULK_IMPORT_CHUNK_SIZE",
    "BULK_IMPORT_ALLOWED_SOURCES",
    "BULK_IMPORT_FILE_ROOT",
    "BULK_IMPORT_MAX_FILE_BYTES",
    "BULK_IMPORT_MAX_LINE_BYTES",
    "BULK_IMPORT_SOURCE_RETRY_SECONDS",
    "BULK_IMPORT_RESTART_WINDOW_SECONDS",
    "BULK_IMPORT_UNRESOLVED_REFERENCE_IS_ERROR",
    "BULK_IMPORT_MAX_CONCURRENT_CHUNKS",
    "BULK_SUBMIT_ALLOWED_SUBMITTERS",
)


def settings_fingerprint(values: dict) -> str:
    digest = {
        name: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]
        for name, value in sorted(values.items())
    }
    return json.dumps(digest, separators=(",", ":"))


BATCH_SETTINGS_FINGERPRINT = settings_fingerprint({name: globals()[name] for name in CLUSTER_WIDE_SETTINGS})
