"""Settings come from the environment only, and a bad value stops start-up with one clear line."""

import json
import logging
import logging.config
import os
import subprocess
import sys
from pathlib import Path

import pytest

from batch.queues import work_notification_queue
from tests.processes import PROJECT_DIR


def load_settings(**env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings; print(settings.NODE_ID, settings.BATCH_MAX_THREADS, settings.JOB_SCHEDULING)",
        ],
        cwd=PROJECT_DIR,
        env={**full_env, "DJANGO_SETTINGS_MODULE": "heavylift.settings"},
        capture_output=True,
        text=True,
    )


def test_valid_environment_is_parsed():
    result = load_settings(NODE_ID="node-2", BATCH_MAX_THREADS="3", JOB_SCHEDULING="false")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["node-2", "3", "False"]


@pytest.mark.parametrize(
    "env, message",
    [
        ({"JOB_SCHEDULING": "maybe"}, "JOB_SCHEDULING must be true or false, got 'maybe'"),
        ({"BATCH_MAX_THREADS": "0"}, "BATCH_MAX_THREADS must be at least 1, got 0"),
        ({"BATCH_MAX_THREADS": "many"}, "BATCH_MAX_THREADS must be an integer, got 'many'"),
        ({"NODE_ID": "node one"}, "NODE_ID must be 1-64 letters, digits"),
        ({"DATABASE_URL": "mysql://localhost/x"}, "DATABASE_URL must be a URL starting with postgres://"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL must be a URL starting with redis://"),
        ({"SECRET_KEY": ""}, "SECRET_KEY is not set"),
        ({"SECRET_KEY": "change-me", "DEBUG": "false"}, "SECRET_KEY is a placeholder"),  # .env.example's value
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be plain or json, got 'xml'"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(env, message):
    result = load_settings(**env)
    assert result.returncode != 0
    assert message in result.stderr


def test_the_logging_settings_name_the_json_formatter_and_the_chunk_filter_that_exist(settings):
    """What LOG_FORMAT=json selects, built as Django's dictConfig builds it (in this process, without reconfiguring it)."""
    configurator = logging.config.DictConfigurator(settings.LOGGING)
    formatter = configurator.configure_formatter(dict(settings.LOGGING["formatters"]["json"]))
    chunk_filter = configurator.configure_filter(dict(settings.LOGGING["filters"]["chunk"]))
    record = logging.LogRecord("heavylift.x", logging.WARNING, __file__, 1, "hello %s", ("there",), None)

    assert chunk_filter.filter(record)
    line = json.loads(formatter.format(record))
    assert (line["level"], line["logger"], line["message"], line["node"]) == (
        "WARNING",
        "heavylift.x",
        "hello there",
        settings.NODE_ID,
    )
    assert settings.LOGGING["handlers"]["console"]["filters"] == ["chunk"]


def test_queue_name_carries_node_and_module(settings):
    settings.REPLACE_HYPHENS_WITH_PERIODS = False
    assert work_notification_queue("node-7", "batch") == "batch2-work-notification-node-7-batch"


def test_queue_name_uses_periods_when_configured(settings):
    settings.REPLACE_HYPHENS_WITH_PERIODS = True
    assert work_notification_queue("node-7", "batch") == "batch2.work.notification.node.7.batch"


def test_the_placeholder_secret_key_is_accepted_in_debug_only():
    assert load_settings(SECRET_KEY="change-me", DEBUG="true").returncode == 0


def database_options(**env: str) -> dict:
    full_env = {**os.environ, **env, "DJANGO_SETTINGS_MODULE": "heavylift.settings"}
    program = (
        "import json; from django.conf import settings; print(json.dumps(settings.DATABASES['default']['OPTIONS']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=PROJECT_DIR, env=full_env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_database_connections_time_out_by_default_and_the_environment_or_the_url_override_it():
    defaults = database_options()
    assert defaults == {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 30000,
        "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 "
        "-c tcp_user_timeout=30000 -c idle_in_transaction_session_timeout=60000",
    }
    assert (
        "idle_in_transaction_session_timeout=0"
        in database_options(DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS="0")["options"]
    )
    assert (
        database_options(DATABASE_TCP_USER_TIMEOUT_MS="5000", DATABASE_KEEPALIVES="false")["tcp_user_timeout"] == 5000
    )
    url = f"{os.environ['DATABASE_URL'].split('?')[0]}?connect_timeout=3"
    assert database_options(DATABASE_URL=url)["connect_timeout"] == 3


@pytest.mark.django_db
def test_a_live_connection_carries_the_client_timeouts():
    from django.db import connection

    connection.ensure_connection()
    dsn = connection.connection.info.dsn
    assert "tcp_user_timeout=30000" in dsn and "keepalives_idle=10" in dsn and "connect_timeout=10" in dsn


@pytest.mark.parametrize(
    "entry_point",
    [
        [sys.executable, "manage.py", "check"],
        [str(Path(sys.executable).parent / "gunicorn"), "heavylift.wsgi", "--check-config"],
        [str(Path(sys.executable).parent / "celery"), "-A", "heavylift", "report"],
    ],
)
def test_a_bad_setting_stops_every_entry_point_with_one_line_naming_it(entry_point):
    """As the README promises: not a 40-line traceback from inside Django, gunicorn or Celery."""
    result = subprocess.run(
        entry_point, cwd=PROJECT_DIR, env={**os.environ, "PORT": "abc"}, capture_output=True, text=True, timeout=120
    )

    assert result.returncode != 0
    assert result.stderr.splitlines() == ["heavylift: configuration error: PORT must be an integer, got 'abc'"]


@pytest.mark.parametrize("backend", ["blobstore.s3.GzipS3Storage", "storages.backends.s3.S3Storage"])
def test_an_object_store_gets_one_put_per_export_file_from_the_process_itself(backend):
    program = (
        "import json; from django.conf import settings; o = settings.STORAGES['bulkexport']['OPTIONS']; "
        "t = o['transfer_config']; print(json.dumps([t.use_threads, t.multipart_threshold, "
        "'transfer_config' in settings.BULK_EXPORT_STORAGE_OPTIONS, o['bucket_name']]))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "heavylift.settings",
        "BULK_EXPORT_STORAGE_BACKEND": backend,
        "BULK_EXPORT_STORAGE_OPTIONS": json.dumps({"bucket_name": "exports"}),
    }
    result = subprocess.run([sys.executable, "-c", program], cwd=PROJECT_DIR, env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    use_threads, threshold, in_the_fingerprinted_setting, bucket = json.loads(result.stdout)
    assert (use_threads, bucket) == (False, "exports")
    assert threshold >= 32 * 1024**2, "a 10,000-resource file (~11 MB) is one PUT, not a multipart upload"
    assert not in_the_fingerprinted_setting, "the options as configured are what hosts compare"
