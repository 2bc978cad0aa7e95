"""The engine's hand-written SQL stands in one module, `batch/sql.py`, where a reader finds it (as procrastinate's
`sql/queries.sql`), with the tables named by the models: no other module of the engine names a table of its own."""

from __future__ import annotations

import re
from pathlib import Path

from django.apps import apps

PROJECT = Path(__file__).resolve().parents[2]


def test_no_engine_module_but_batch_sql_names_an_engine_table():
    tables = {model._meta.db_table for model in apps.get_app_config("batch").get_models()}
    named = re.compile(r"\b(" + "|".join(sorted(tables)) + r")\b")
    naming = [
        f"{path.relative_to(PROJECT)}:{number}: {line.strip()}"
        for path in sorted((PROJECT / "batch").rglob("*.py"))
        if path != PROJECT / "batch" / "sql.py" and "migrations" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if named.search(line)
    ]
    assert naming == [], "write the statement in batch/sql.py:\n" + "\n".join(naming)


def test_batch_sql_takes_every_table_name_from_the_models():
    assert not re.search(r"\bbatch_[a-z]+\b", (PROJECT / "batch" / "sql.py").read_text())
