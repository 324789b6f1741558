"""The stores' schema: one migration routine for SQLite and PostgreSQL, run by readers too."""

from __future__ import annotations

from guard.audit import open_store
from guard.audit._schema import SCHEMA_VERSION
from tests.guard.audit.conftest import sql


def test_a_reader_migrates_an_older_store(store_url: str) -> None:
    store = open_store(store_url)
    store.rows("SELECT 1")  # PostgreSQL: creates the schema
    store.close()
    # The store as a version without the hourly summary left it.
    sql(store_url, "DROP TABLE audit_hour")
    sql(store_url, "DELETE FROM schema_version WHERE version >= 5")
    reader = open_store(store_url, create=False)
    try:
        assert reader.rows("SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
        assert reader.rows("SELECT count(*) FROM audit_hour") == [(0,)]
    finally:
        reader.close()


def test_a_store_at_the_current_version_opens_without_a_write(store_url: str) -> None:
    store = open_store(store_url)
    store.rows("SELECT 1")
    store.close()
    before = open_store(store_url, create=False)
    try:
        applied = before.rows("SELECT version, applied_at FROM schema_version ORDER BY version")
    finally:
        before.close()
    reader = open_store(store_url, create=False)
    try:
        again = reader.rows("SELECT version, applied_at FROM schema_version ORDER BY version")
    finally:
        reader.close()
    assert again == applied
    assert [v for v, _ in applied] == list(range(1, SCHEMA_VERSION + 1))
