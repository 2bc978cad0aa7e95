"""A database created by the code before the tree moved (jobsite/ the shell, the jobs in fhirstore/) migrates
forward with today's code: no table moves, and the scheduled jobs keep their rows, so an operator's pause holds
and no job is disabled as "no longer declared in code" while its twin under a new name starts afresh.

The old code is the commit before the move, taken from git into a temporary directory and run with this
venv against a database of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings
from psycopg import sql

from scheduling.sync import REMOVED_FROM_CODE
from tests.processes import PROJECT_DIR

BEFORE_THE_MOVE = "395d480"  # main before `heavylift/` and `fhirjobs/`
PAUSED_JOB = "fhirstore.bulkexport.periodic.purge_expired_export_files"
MOVED_APP_LABELS = ("bulkexport", "bulkimport")  # the moved apps with tables (reindex has none)


def old_tree(directory: Path) -> Path:
    archive = directory / "old.tar"
    found = subprocess.run(
        ["git", "-C", str(PROJECT_DIR), "archive", "-o", str(archive), BEFORE_THE_MOVE], capture_output=True, text=True
    )
    if found.returncode != 0:
        pytest.skip(f"commit {BEFORE_THE_MOVE} is not in this clone's history: {found.stderr.strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(directory / "old", filter="data")
    return directory / "old"


@pytest.fixture
def empty_database():
    """A database of this test's own on the server of DATABASE_URL, dropped afterwards."""
    server = settings.DATABASES["default"]
    name = f"heavylift_upgrade_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(
        host=server["HOST"],
        port=server["PORT"] or 5432,
        user=server["USER"],
        password=server["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    password = f":{quote(server['PASSWORD'], safe='')}" if server["PASSWORD"] else ""
    host = quote(server["HOST"], safe="")  # the embedded server's host is a socket directory
    try:
        yield f"postgresql://{server['USER']}{password}@{host}:{server['PORT'] or 5432}/{name}"
    finally:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def migrate(tree: Path, database_url: str, settings_module: str) -> str:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "PYTHONPATH": str(tree),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def scheduled_rows(database_url: str) -> dict[str, tuple[bool, str]]:
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(
            "SELECT name, enabled, description FROM django_celery_beat_periodictask WHERE task LIKE 'scheduling.%'"
        ).fetchall()
    return {name: (enabled, description) for name, enabled, description in rows}


def test_a_database_of_the_code_before_the_move_migrates_forward_keeping_its_scheduled_jobs(empty_database, tmp_path):
    migrate(old_tree(tmp_path), empty_database, "jobsite.settings")
    with psycopg.connect(empty_database) as connection:  # an operator paused the hourly purge in the admin
        connection.execute("UPDATE django_celery_beat_periodictask SET enabled = false WHERE name = %s", [PAUSED_JOB])
        old_tables = {
            row[0]
            for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        }
    before = scheduled_rows(empty_database)

    output = migrate(PROJECT_DIR, empty_database, "heavylift.settings")

    after = scheduled_rows(empty_database)
    with psycopg.connect(empty_database) as connection:
        new_tables = {
            row[0]
            for row in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        }
        applied = {row[0] for row in connection.execute("SELECT DISTINCT app FROM django_migrations").fetchall()}
    assert "No migrations to apply" in output or "Applying" in output
    assert set(before) <= set(after), f"lost: {sorted(set(before) - set(after))}"
    twins = {
        name
        for name in set(after) - set(before)
        if name.rsplit(".", 1)[-1] in {old.rsplit(".", 1)[-1] for old in before}
    }
    assert twins == set(), f"renamed: {sorted(twins)}"  # new jobs may join, under names of their own
    assert [name for name, (_, description) in after.items() if description == REMOVED_FROM_CODE] == []
    assert after[PAUSED_JOB][0] is False  # the operator's pause holds
    assert all(enabled for name, (enabled, _) in after.items() if name != PAUSED_JOB)
    assert old_tables <= new_tables
    assert set(MOVED_APP_LABELS) <= applied
