"""After a transactional test, the test database goes back to what `migrate` left: fast.

Django empties the database after each `transaction=True` test with `flush`: a `TRUNCATE` of every table (a
new file per table and index) and then the `post_migrate` signal again (content types, permissions, the
scheduled jobs synced from code). That took 1-3 s per test, and the suite has ~460 such tests (real worker
processes only see committed rows). Here the rows `migrate` left are copied aside once per run; the reset
deletes every row of every model table and copies them back, in one transaction: ~15 ms. Every foreign key
Django creates is `DEFERRABLE INITIALLY DEFERRED`, so the deletes need no order; the copied rows keep their
ids, so cached content types stay right. A table that has grown past two pages is truncated instead (with the
tables that refer to it), so dead rows do not pile up over the run and no test's query plan meets them.
"""
from __future__ import annotations

from django.db import connection, transaction

SCHEMA = "heavylift_test_baseline"
GROWN_BYTES = 2 * 8192  # past two pages: TRUNCATE (a new, empty file) rather than DELETE (dead rows left)


class Baseline:
    """The rows of the freshly migrated test database, and the SQL that brings them back."""

    def __init__(self) -> None:
        self.tables: list[str] = []
        self.reset_sql = ""

    def capture(self) -> None:
        tables = self.tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
            with_rows = []
            for table in tables:
                cursor.execute(f"SELECT EXISTS (SELECT FROM {quote(table)})")
                if cursor.fetchone()[0]:
                    cursor.execute(f"CREATE TABLE {SCHEMA}.{quote(table)} AS TABLE {quote(table)}")
                    with_rows.append(table)
        self.reset_sql = "".join(f"DELETE FROM {quote(table)};" for table in tables) + "".join(
            f"INSERT INTO {quote(table)} SELECT * FROM {SCHEMA}.{quote(table)};" for table in with_rows)

    def restore(self) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT name FROM unnest(%s::text[]) AS name "
                           "WHERE pg_relation_size(quote_ident(name)::regclass) > %s", [self.tables, GROWN_BYTES])
            grown = [connection.ops.quote_name(name) for (name,) in cursor.fetchall()]
            if grown:
                cursor.execute(f"TRUNCATE {', '.join(grown)} CASCADE")
            cursor.execute(self.reset_sql)


baseline = Baseline()


def restore_baseline(test_case) -> None:
    """Stands in for `TransactionTestCase._fixture_teardown` (the flush), for the default database."""
    baseline.restore()
