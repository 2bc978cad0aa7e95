"""After a transactional test, the test database goes back to what `migrate` left: fast.

Django empties the database after each `transaction=True` test with `flush`: a `TRUNCATE` of every table (a
new file per table and index) and then the `post_migrate` signal again (content types, permissions, the
scheduled jobs synced from code). That took 1-3 s per test, and the suite has ~460 such tests (real worker
processes only see committed rows). Here the rows `migrate` left are copied aside once per run; the reset
truncates only the tables that hold rows (a test touches a few of the 55) and copies the migrated rows back,
in one transaction. TRUNCATE rather than DELETE, so a table's statistics start from nothing again, as after
Django's flush: code that reads PostgreSQL's row estimates (`reltuples`) must not see an earlier test's
table. The copied rows keep their ids, so cached content types stay right.
"""

from __future__ import annotations

from django.db import connection, transaction

SCHEMA = "heavylift_test_baseline"


class Baseline:
    """The rows of the freshly migrated test database, and the SQL that brings them back."""

    def __init__(self) -> None:
        self.tables_with_rows_sql = ""
        self.restore_sql = ""

    def capture(self) -> None:
        tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
            with_rows = []
            for table in tables:
                cursor.execute(f"SELECT EXISTS (SELECT FROM {quote(table)})")
                if cursor.fetchone()[0]:
                    cursor.execute(f"CREATE TABLE {SCHEMA}.{quote(table)} AS TABLE {quote(table)}")
                    with_rows.append(table)
        self.tables_with_rows_sql = " UNION ALL ".join(
            f"SELECT '{quote(table)}' WHERE EXISTS (SELECT FROM {quote(table)})" for table in tables
        )
        self.restore_sql = "".join(
            f"INSERT INTO {quote(table)} SELECT * FROM {SCHEMA}.{quote(table)};" for table in with_rows
        )

    def restore(self) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(self.tables_with_rows_sql)
            holding_rows = [name for (name,) in cursor.fetchall()]
            if holding_rows:  # CASCADE: the tables that refer to these are emptied with them, as they must be
                cursor.execute(f"TRUNCATE {', '.join(holding_rows)} CASCADE")
            cursor.execute(self.restore_sql)


baseline = Baseline()


def restore_baseline(test_case) -> None:
    """Stands in for `TransactionTestCase._fixture_teardown` (the flush), for the default database."""
    baseline.restore()
