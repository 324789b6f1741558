"""Stores: schema migrations, readers that never create, timed checkpoints."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from guard.audit import AuditStoreError, open_store
from guard.audit._schema import SCHEMA_VERSION
from tests.guard.audit.conftest import Keys, decision_event, make_trail, record


def test_schema_is_migrated_once(store_url: str) -> None:
    for _ in range(2):
        store = open_store(store_url)
        store.rows("SELECT count(*) FROM audit_event")
        store.close()
    reader = open_store(store_url, create=False)
    versions = reader.rows("SELECT version FROM schema_version ORDER BY version")
    reader.close()
    assert [v[0] for v in versions] == list(range(1, SCHEMA_VERSION + 1))


def test_readers_do_not_create_stores(tmp_path: Path) -> None:
    with pytest.raises(AuditStoreError, match="no audit store at"):
        open_store(f"sqlite:///{tmp_path / 'none.db'}", create=False)
    assert not (tmp_path / "none.db").exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(AuditStoreError, match="is not an audit store"):
        open_store(f"sqlite:///{other}", create=False)


@pytest.mark.parametrize("url", [
    "postgresql://u:secretpw@127.0.0.1:9/x",
    "postgresql://u@127.0.0.1:9/x?sslmode=disable&password=secretpw",
    "postgresql://u@127.0.0.1:9/x?sslmode=disable&pass%77ord=secretpw",
    "postgresql://u@127.0.0.1:9/x?sslpassword=secretpw",  # the client key's: no option shown
])
def test_a_postgresql_store_error_names_the_store_without_its_password(url: str) -> None:
    with pytest.raises(AuditStoreError) as refused:  # nothing listens on port 9
        open_store(url, create=False, timeout=1)
    assert "cannot read audit store postgresql://u@127.0.0.1:9/x" in str(refused.value)
    assert "secretpw" not in str(refused.value)


def test_sqlite_store_is_wal_and_its_index_commits_without_waiting_for_the_disk(
        tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")  # the journal is the durable record
    assert store.rows("PRAGMA journal_mode") == [("wal",)]
    assert store._conn.execute("PRAGMA synchronous").fetchone() == (1,)  # type: ignore[attr-defined]
    store.close()


def test_a_checkpoint_is_signed_on_the_timer(store_url: str, keys: Keys) -> None:
    trail = make_trail(store_url, keys, checkpoint_seconds=0.2)
    record(trail, decision_event())
    trail.flush()  # the index made the schema (the trail's start does not wait for the store)
    reader = open_store(store_url, create=False)
    kinds: list[str] = []
    deadline = time.monotonic() + 60
    while "periodic" not in kinds and time.monotonic() < deadline:
        time.sleep(0.1)
        kinds = [r[0] for r in reader.rows("SELECT kind FROM audit_checkpoint")]
    trail.close()
    reader.close()
    assert sorted(kinds) == ["open", "periodic"]
