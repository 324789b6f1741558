"""Schema 6 from a version-5 store that holds data: the upgrade, and every query's plan.

A store is made as schema 5 left it (its tables and indexes, the journal offset
table the index made on first use, rows of decisions, outcomes, checkpoints and
register entries), copied, and one copy opened, which migrates it. Then every
query the package, the CLI and the console run against these tables (captured by
running them) is explained on both copies: a query that used an index at
version 5 must not scan a whole table at version 6 (SQLite ``EXPLAIN QUERY
PLAN``; PostgreSQL ``EXPLAIN`` with sequential scans priced out, so a plan that
still holds one has no index to use).
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from guard.audit import (
    EventFilter,
    EventKind,
    open_store,
    query_events,
    stats,
    subject_report,
    verify,
)
from guard.audit._countersign import _OPEN_CHAINS, _TAIL
from guard.audit._event import TS_FORMAT, AuditEvent
from guard.audit._jverify import _compare
from guard.audit._schema import (
    INSERT_CHECKPOINT,
    INSERT_EVENT,
    MIGRATIONS,
    SCHEMA_VERSION,
    SUBJECT_MATCH,
    checkpoint_row,
)
from guard.audit._store import indexed_offset
from guard.audit._summary import BACKFILL
from guard.audit._verify import stored_checkpoints
from middleware.console._data import (
    Filters,
    decisions_page,
    encode_cursor,
    event_detail,
    latest_ts,
    newer_than,
    subject_events,
)
from middleware.console._overview import overview_data
from middleware.console._policies import history
from middleware.console._subject import grant_valid
from tests.guard.audit.conftest import Keys, Recording, make_event, row_of, run_statements

BASE = datetime(2026, 3, 1, 9, tzinfo=UTC)
SUBJECT = "s" * 64
V5_ONLY = ("CREATE TABLE IF NOT EXISTS audit_journal_offset "  # made by schema 5's first read
           "(journal TEXT PRIMARY KEY, next_offset BIGINT NOT NULL)",
           "CREATE INDEX IF NOT EXISTS subject_register_recorded ON subject_register "
           "(recorded_at)")


def _events() -> list[AuditEvent]:
    """60 decisions (two subjects, some without one), an outcome of each fifth, a policy event."""
    out: list[AuditEvent] = []
    seq = 0
    for n in range(60):
        seq += 1
        ts = (BASE + timedelta(minutes=7 * n)).strftime(TS_FORMAT)
        decision = make_event(EventKind.DECISION, ts=ts, caller=f"svc:{n % 3}",
                              purpose="p.q", categories=("contact.email",), action="read",
                              allowed=n % 4 != 0, reason="allowed" if n % 4 else "no_rule",
                              rule=(), lawful_basis=("contract",), policy_version="v1",
                              subject=(SUBJECT if n % 2 else "t" * 64) if n % 5 else None,
                              http_method="GET", http_route="/a", country="US",
                              writer_id="w", seq=seq)
        out.append(decision)
        if n % 5 == 0:
            seq += 1
            out.append(make_event(EventKind.OUTCOME, ts=ts, decision_ref=decision.event_id,
                                  http_status=204, writer_id="w", seq=seq))
    seq += 1
    out.append(make_event(EventKind.POLICY_LOADED, ts=BASE.strftime(TS_FORMAT),
                          policy_version="v1", writer_id="w", seq=seq))
    return out


EVENTS = _events()


def make_v5(url: str) -> list[AuditEvent]:
    """A store as schema 5 left it, holding events; the events."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from guard.audit._checkpoint import CheckpointKind, sign_checkpoint

    events = EVENTS
    key = Ed25519PrivateKey.generate()
    checkpoint = sign_checkpoint(key, checkpoint_id="cp-1", writer_id="w", seq=10,
                                 hash_=events[9].hash, ts=events[9].ts,
                                 kind=CheckpointKind.PERIODIC)
    stamp = "2026-01-01T00:00:00Z"
    statements: list[tuple[str, Sequence[Any]]] = [
        ("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
         ())]
    for version in range(1, 6):
        statements += [(sql, ()) for sql in MIGRATIONS[version]]
        statements.append(("INSERT INTO schema_version VALUES (?, ?)", (version, stamp)))
    statements += [(sql, ()) for sql in V5_ONLY]
    statements += [(INSERT_EVENT, row_of(e)) for e in events]
    statements.append((BACKFILL, ()))  # counted as schema 5's index counted them
    statements.append((INSERT_CHECKPOINT, checkpoint_row(checkpoint)))
    statements.append(("INSERT INTO audit_journal_offset VALUES (?, ?)", ("lane-1", 42)))
    statements.append(("INSERT INTO subject_register VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (SUBJECT, 1, "r-1", "consent", "p", stamp, stamp, "dpo", "ref",
                        events[1].event_id)))
    run_statements(url, statements)
    return events


@pytest.fixture
def stores(store_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(a version-5 store's URL, a copy of it), both holding the same events."""
    make_v5(store_url)
    if store_url.startswith("sqlite:///"):
        copy = tmp_path / "copy.db"
        shutil.copyfile(store_url.removeprefix("sqlite:///"), copy)
        yield store_url, f"sqlite:///{copy}"
        return
    admin, name = store_url.rsplit("/", 1)
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}_v5 TEMPLATE {name}")
    yield store_url, f"{admin}/{name}_v5"
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}_v5 WITH (FORCE)")


def _names(url: str, kind: str) -> set[str]:
    """The names of the store's indexes or tables."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = ?",
                                               (kind,))}
        finally:
            conn.close()
    sql = ("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'" if kind == "index"
           else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    with psycopg.connect(url) as pg:
        return {n for (n,) in pg.execute(sql)}


def test_a_version_5_store_with_data_is_upgraded_and_answers_as_before(
        stores: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    url, _ = stores
    events = EVENTS
    assert "subject_register_recorded" in _names(url, "index")
    with caplog.at_level(logging.WARNING, logger="guard.audit"):
        store = open_store(url, create=False)
    # An upgrade that may read every event says so before it starts.
    assert [r.getMessage() for r in caplog.records if "upgrading" in r.getMessage()] == [
        f"upgrading the audit store's schema from version 5 to {SCHEMA_VERSION}: a migration "
        "may read every stored event once; writers wait until it ends"]
    try:
        assert store.rows("SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
        assert indexed_offset(store, "lane-1") == 42  # the offset table and its row kept
        report = subject_report(store, SUBJECT)
        mine = [e for e in events if e.subject == SUBJECT]
        assert [a.event_id for a in report.accesses] == [e.event_id for e in mine if e.allowed]
        assert report.denied_attempts == sum(1 for e in mine if not e.allowed)
        assert [r.ref for r in report.register] == ["ref"]
        # The index goes on from its offset: a new event of the subject is found too.
        late = make_event(EventKind.DECISION, subject=SUBJECT, allowed=True, writer_id="w2",
                          seq=1, ts=(BASE + timedelta(days=1)).strftime(TS_FORMAT))
        from guard.audit._fields import compact

        store.index_records([compact(row_of(late))], "lane-2", 1)
        again = subject_report(store, SUBJECT)
        assert again.accesses[-1].event_id == late.event_id
        assert indexed_offset(store, "lane-2") == 1
    finally:
        store.close()
    indexes = _names(url, "index")
    assert "subject_register_recorded" not in indexes
    sqlite = url.startswith("sqlite:///")
    assert ("audit_event_subject" in indexes) is not sqlite  # SQLite: its FTS5 index instead
    if sqlite:  # the index adds its own rows' tokens; deletes and changes keep it exact
        assert {"audit_subject_remove", "audit_subject_change"} == _names(url, "trigger")


def _every_query(store: Recording, events: list[AuditEvent], keys: Keys) -> None:
    """Run what the package, the CLI and the console read these tables with."""
    from guard.audit import load_public_key

    since = BASE.strftime(TS_FORMAT)
    decision = next(e for e in events if e.kind == EventKind.DECISION)
    outcome = next(e for e in events if e.kind == EventKind.OUTCOME)
    subject_report(store, SUBJECT)
    for where in (EventFilter(), EventFilter(subject=SUBJECT), EventFilter(since=since),
                  EventFilter(until=since), EventFilter(caller="svc:1"),
                  EventFilter(purpose="p"), EventFilter(category="contact"),
                  EventFilter(allowed=False), EventFilter(reason="no_rule"),
                  EventFilter(kind="policy_loaded")):
        query_events(store, where)  # `guard audit query`
        query_events(store, where, oldest_first=True, limit=None)
    stats(store, EventFilter(since=since))  # `guard audit stats`
    verify(store, load_public_key(keys.public))  # `guard audit verify`
    stored_checkpoints(store, "w")
    _compare(store, {"w": {decision.event_id: row_of(decision)}})  # `verify --journal`
    store.rows(_OPEN_CHAINS)
    store.rows(_TAIL, ("w", 5))
    indexed_offset(store, "lane-1")
    # The console.
    for filters in (Filters(), Filters(since="2026-03-01", caller="svc:1", outcome="denied"),
                    Filters(purpose="p", category="contact", route="/a", country="us")):
        page = decisions_page(store, filters, cursor=None, size=10)
        decisions_page(store, filters, cursor=encode_cursor(page.rows[-1].event), size=10)
        newer_than(store, filters, since)
    latest_ts(store)
    event_detail(store, decision.event_id)
    event_detail(store, outcome.event_id)
    subject_events(store, SUBJECT)
    history(store)
    grant_valid(store, decision.event_id, "svc:0", SUBJECT, 10)
    overview_data(store, since, None, now=BASE + timedelta(days=1))
    overview_data(store, (BASE + timedelta(minutes=5)).strftime(TS_FORMAT), None,
                  now=BASE + timedelta(days=30))
    store.rows("SELECT writer_id, count(*), max(seq) FROM audit_event GROUP BY writer_id")
    store.rows("SELECT writer_id, seq, kind, ts FROM audit_checkpoint "
               "ORDER BY writer_id, seq, ts")


def _plan(url: str, sql: str, params: Sequence[Any]) -> list[str]:
    """The query's plan, line by line."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return [str(r[3]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        finally:
            conn.close()
    with psycopg.connect(url) as pg:
        pg.execute("SET enable_seqscan = off")  # a Seq Scan left: no index could serve
        return [str(r[0]) for r in pg.execute(f"EXPLAIN {sql.replace('?', '%s')}",
                                             params)]  # type: ignore[arg-type]


_SCAN = re.compile(r"^(?:SCAN (?!.*(?:USING|VIRTUAL TABLE))(\w+)|.*Seq Scan on (\w+))")


def _scans(plan: list[str]) -> set[str]:
    """The tables the plan reads whole (not through an index)."""
    return {m.group(1) or m.group(2) for line in plan if (m := _SCAN.match(line.strip()))}


def _as_v5(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """The query as schema 5's code ran it: a subject chosen by ``e.subject = ?``."""
    at = sql.find(SUBJECT_MATCH["sqlite"])
    if at < 0:
        return sql, params
    before = sql[:at].count("?")
    sql = sql.replace(SUBJECT_MATCH["sqlite"], SUBJECT_MATCH["postgresql"], 1)
    return _as_v5(sql, params[:before + 1] + params[before + 2:])  # each such condition


def test_no_query_scans_a_table_it_read_through_an_index_at_version_5(
        stores: tuple[str, str], keys: Keys) -> None:
    url, v5 = stores
    opened = open_store(url, create=False)
    store = Recording(opened)
    try:
        _every_query(store, EVENTS, keys)
    finally:
        opened.close()
    assert len(store.queries) > 40
    sqlite = url.startswith("sqlite:///")
    used_fts = 0
    for sql, params in store.queries:
        before = _scans(_plan(v5, *_as_v5(sql, params)))
        plan = _plan(url, sql, params)
        after = _scans(plan)
        assert after <= before, (sql, plan)
        used_fts += any("audit_subject VIRTUAL TABLE" in line for line in plan)
    assert used_fts >= (4 if sqlite else 0)  # the report's two reads, the console's, the CLI's


@pytest.mark.postgres
def test_a_read_only_role_gets_a_clear_error_from_an_older_store_and_reads_a_current_one(
        pg_url: str) -> None:
    """A reader that may not migrate is refused in one line, never served an older schema."""
    from guard.audit import AuditStoreError

    make_v5(pg_url)
    admin, name = pg_url.rsplit("/", 1)
    role = f"reader_{name}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    reader_url = pg_url.replace("://postgres@", f"://{role}@")
    try:
        with pytest.raises(AuditStoreError, match="permission denied") as refused:
            open_store(reader_url, create=False)
        assert "\n" not in str(refused.value)
        owner = open_store(pg_url)
        owner.rows("SELECT 1")  # the owner migrates it
        owner.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        reader = open_store(reader_url, create=False)
        try:
            report = subject_report(reader, SUBJECT)
            assert len(report.accesses) == sum(
                1 for e in EVENTS if e.subject == SUBJECT and e.allowed)
            assert overview_data(reader, BASE.strftime(TS_FORMAT), None,
                                 now=BASE + timedelta(days=1))["callers"]
        finally:
            reader.close()
    finally:
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {role}")
