"""Schema 7 from a version-6 SQLite store that holds data: its subject index made anew.

A store is made as schema 6 left it (schema 5's, then version 6's statements as
they were: the FTS5 index of the whole subject's token, kept by three triggers),
and opened, which migrates it: the index then holds each event's token of its
subject's first 12 characters, the insert trigger is gone (the index adds its own
rows' tokens), deletes and changes still keep it exact, and the subject's events
are found as before. On a larger store the fill says how far it is.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from guard.audit import EventKind, open_store, subject_report
from guard.audit import _schema as schema
from guard.audit._fields import compact
from guard.audit._schema import MIGRATIONS, SCHEMA_VERSION, SUBJECT_TOKEN
from tests.guard.audit.conftest import make_event, row_of
from tests.guard.audit.test_audit_schema6_upgrade import EVENTS, SUBJECT, make_v5

V6_TRIGGERS = {  # schema 6's, as it made them
    "add": "AFTER INSERT ON audit_event WHEN new.subject IS NOT NULL BEGIN "
           "INSERT INTO audit_subject (rowid, token) VALUES "
           "(new.rowid, 's' || hex(new.subject)); END",
    "remove": "AFTER DELETE ON audit_event WHEN old.subject IS NOT NULL BEGIN "
              "INSERT INTO audit_subject (audit_subject, rowid, token) VALUES "
              "('delete', old.rowid, 's' || hex(old.subject)); END",
    "change": "AFTER UPDATE OF subject ON audit_event BEGIN "
              "INSERT INTO audit_subject (audit_subject, rowid, token) SELECT 'delete', "
              "old.rowid, 's' || hex(old.subject) WHERE old.subject IS NOT NULL; "
              "INSERT INTO audit_subject (rowid, token) SELECT new.rowid, "
              "'s' || hex(new.subject) WHERE new.subject IS NOT NULL; END",
}
V6_SQLITE = (
    "DROP TABLE IF EXISTS audit_subject",
    "CREATE VIRTUAL TABLE audit_subject USING fts5(token, content='', detail=none, "
    "columnsize=0)",
    "INSERT INTO audit_subject (rowid, token) SELECT rowid, 's' || hex(subject) "
    "FROM audit_event WHERE subject IS NOT NULL",
    *(f"CREATE TRIGGER IF NOT EXISTS audit_subject_{name} {body}"
      for name, body in V6_TRIGGERS.items()),
    "DROP INDEX IF EXISTS audit_event_subject",
)


def make_v6(path: Path) -> None:
    """A store as schema 6 left it, holding :data:`EVENTS`."""
    make_v5(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    with conn:
        for sql in (*MIGRATIONS[6], *V6_SQLITE):
            conn.execute(sql)
        conn.execute("INSERT INTO schema_version VALUES (6, '2026-11-30T00:00:00Z')")
        old = conn.execute("SELECT count(*) FROM audit_subject "
                           "WHERE audit_subject MATCH 's' || hex(?)", (SUBJECT,)).fetchone()
        assert old == (sum(1 for e in EVENTS if e.subject == SUBJECT),)  # as version 6 had it
    conn.close()


def _entries(conn: sqlite3.Connection, subject: str) -> int:
    return int(conn.execute("SELECT count(*) FROM audit_subject WHERE audit_subject "
                            f"MATCH {SUBJECT_TOKEN.format('?')}", (subject,)).fetchone()[0])


def test_a_version_6_store_gets_the_short_tokens_and_loses_the_insert_trigger(
        tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    make_v6(path)
    store = open_store(f"sqlite:///{path}", create=False)
    try:
        assert store.rows("SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]
        report = subject_report(store, SUBJECT)
        mine = [e for e in EVENTS if e.subject == SUBJECT]
        assert [a.event_id for a in report.accesses] == [e.event_id for e in mine if e.allowed]
        assert report.denied_attempts == sum(1 for e in mine if not e.allowed)
        late = make_event(EventKind.DECISION, subject=SUBJECT, allowed=True, writer_id="w2",
                          seq=1)
        store.index_records([compact(row_of(late))], "lane-2", 1)
        assert subject_report(store, SUBJECT).accesses[-1].event_id == late.event_id
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        triggers = {n for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert triggers == {"audit_subject_remove", "audit_subject_change"}
        assert conn.execute("SELECT count(*) FROM audit_subject WHERE audit_subject "
                            "MATCH 's' || hex(?)", (SUBJECT,)).fetchone() == (0,)  # old tokens
        for subject in (SUBJECT, "t" * 64):
            assert _entries(conn, subject) == conn.execute(
                "SELECT count(*) FROM audit_event WHERE subject = ?", (subject,)).fetchone()[0]
        with conn:  # a tamperer's delete and change keep it exact
            conn.execute("DELETE FROM audit_event WHERE event_id = ?", (late.event_id,))
            conn.execute("UPDATE audit_event SET subject = ? WHERE subject = ?",
                         ("u" * 64, "t" * 64))
        assert _entries(conn, SUBJECT) == len(mine)
        assert _entries(conn, "t" * 64) == 0
        assert _entries(conn, "u" * 64) == sum(1 for e in EVENTS if e.subject == "t" * 64)
    finally:
        conn.close()


def test_the_fill_on_a_larger_store_says_how_far_it_is(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.db"
    make_v6(path)
    monkeypatch.setattr(schema, "_FILL_STEP", 25)  # "a million" rows: 25 here
    with caplog.at_level(logging.WARNING, logger="guard.audit"):
        open_store(f"sqlite:///{path}", create=False).close()
    last = len(EVENTS)
    assert [r.getMessage() for r in caplog.records if "subject index" in r.getMessage()] == [
        f"audit store: the subject index holds the events up to row {n} of {last}"
        for n in (25, 50, last)]
    conn = sqlite3.connect(path)
    try:
        assert _entries(conn, SUBJECT) == sum(1 for e in EVENTS if e.subject == SUBJECT)
    finally:
        conn.close()


def test_a_row_stored_around_the_index_can_be_deleted_or_changed_without_damage(
        tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        kept = make_event(EventKind.DECISION, subject=SUBJECT, allowed=True, writer_id="w",
                          seq=1)
        store.index_records([compact(row_of(kept))], "lane-0", 1)
        conn = sqlite3.connect(tmp_path / "audit.db")
        try:
            with conn:  # a forged row (or a bulk load's, before its fill): no entry
                for seq in (2, 3):
                    forged = row_of(make_event(EventKind.DECISION, subject=SUBJECT,
                                               allowed=True, writer_id="w", seq=seq))
                    conn.execute(f"INSERT INTO audit_event VALUES ({', '.join('?' * 27)})",
                                 forged)
            with conn:
                conn.execute("DELETE FROM audit_event WHERE seq = 2")
                conn.execute("UPDATE audit_event SET subject = ? WHERE seq = 3", ("t" * 64,))
            conn.execute("INSERT INTO audit_subject (audit_subject, rank) "
                         "VALUES ('integrity-check', 0)")  # raises on damage
            assert _entries(conn, SUBJECT) == 1
            assert _entries(conn, "t" * 64) == 1  # the changed row is indexed from then on
        finally:
            conn.close()
        assert [a.event_id for a in subject_report(store, SUBJECT).accesses] == [kept.event_id]
    finally:
        store.close()
