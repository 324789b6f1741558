"""Store down: events go to the fsynced spool; store back: replayed exactly once."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

from guard.audit import AuditTrail, load_public_key, load_signing_key, open_store, verify
from tests.guard.audit.conftest import CHAIN_KEY, Keys, decision_event


def _wait_until_replayed(spool: Path, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while spool.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool.stat().st_size == 0, "the spool was not replayed"


def _counts(url: str, keys: Keys) -> tuple[dict[str, int], bool]:
    store = open_store(url, create=False)
    counts = dict(store.rows("SELECT event_id, count(*) FROM audit_event GROUP BY event_id"))
    report = verify(store, load_public_key(keys.public), chain_key=CHAIN_KEY)
    store.close()
    assert report.ok, report.problems
    return {str(k): int(v) for k, v in counts.items()}, report.ok


def test_sqlite_locked_then_back(tmp_path: Path, keys: Keys) -> None:
    db = tmp_path / "audit.db"
    spool = tmp_path / "spool.jsonl"
    url = f"sqlite:///{db}"
    trail = AuditTrail(open_store(url, timeout=0.05), load_signing_key(keys.signing),
                       spool=spool)
    before = [decision_event(subject_id="a") for _ in range(3)]
    for event in before:
        trail.record(event)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # the store now refuses every write
    during = [decision_event(subject_id="b") for _ in range(5)]
    for event in during:
        trail.record(event)  # durable in the spool: no error
    assert spool.stat().st_size > 0
    ok, why = trail.ready()
    assert ok
    assert "spool" in why
    locker.execute("ROLLBACK")
    locker.close()
    _wait_until_replayed(spool)
    after = [decision_event(subject_id="c") for _ in range(2)]
    for event in after:
        trail.record(event)
    trail.close()
    counts, _ = _counts(url, keys)
    assert counts == {e.event_id: 1 for e in before + during + after}


def test_replay_of_a_partly_replayed_spool_adds_nothing_twice(tmp_path: Path, keys: Keys) -> None:
    """A crash between replay and truncation replays again; ids make it idempotent."""
    db = tmp_path / "audit.db"
    spool = tmp_path / "spool.jsonl"
    url = f"sqlite:///{db}"
    trail = AuditTrail(open_store(url, timeout=0.05), load_signing_key(keys.signing),
                       spool=spool)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    events = [decision_event(subject_id=str(i)) for i in range(4)]
    for event in events:
        trail.record(event)
    saved = spool.read_bytes()
    locker.execute("ROLLBACK")
    locker.close()
    _wait_until_replayed(spool)
    trail.close()
    spool.write_bytes(saved)  # as if the process died before truncating
    again = AuditTrail(open_store(url), load_signing_key(keys.signing), spool=spool)
    again.close()  # closing replays a pending spool
    assert spool.stat().st_size == 0
    counts, _ = _counts(url, keys)
    assert counts == {e.event_id: 1 for e in events}


@pytest.mark.postgres
def test_postgres_refusing_connections_then_back(
    pg_url: str, postgres_url: str, tmp_path: Path, keys: Keys
) -> None:
    admin = postgres_url.rsplit("/", 1)[0] + "/postgres"
    name = pg_url.rsplit("/", 1)[1]
    spool = tmp_path / "spool.jsonl"
    trail = AuditTrail(open_store(pg_url, timeout=1), load_signing_key(keys.signing),
                       spool=spool)
    first = decision_event()
    trail.record(first)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = %s", (name,))
    during = [decision_event(subject_id=str(i)) for i in range(3)]
    for event in during:
        trail.record(event)
    assert spool.stat().st_size > 0
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
    _wait_until_replayed(spool)
    trail.close()
    counts, _ = _counts(pg_url, keys)
    assert counts == {e.event_id: 1 for e in [first, *during]}
