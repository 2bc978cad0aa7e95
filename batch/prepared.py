"""The hot path's statements (`batch.sql`) prepared on the server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg
from django.db import connection


def execute_prepared(sql: str, params: Mapping[str, Any]) -> tuple | None:
    """Run a hot statement as a server-side prepared statement and return its first row.

    Django binds parameters on the client, so PostgreSQL parses and plans every statement anew; for the
    claim and the completion, which run once per chunk, planning costs more than running them.
    """
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()
