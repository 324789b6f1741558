"""A subject's events hidden from its access report by the subject index are named by verify.

SQLite finds a subject's events through its full-text subject index (``audit_subject``),
an ordinary table to a writer to the store. Removing an event's entry there (FTS5's
``'delete'`` command) left the event and every chain intact, so ``guard audit verify``
said the store was whole, while the subject's access report (``guard audit query
--subject``, the report, the console's subject page) no longer held the event: a
writer to the store could hide chosen accesses from a data subject. Verify now checks
that every event with a subject is found through the index as a subject query finds it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.audit import EventFilter, open_store, query_events
from guard.audit._schema import SUBJECT_TOKEN
from tests.security.audit_tamper_kit import (
    AuditKeys,
    check,
    cli_verify,
    make_keys,
    pseudonym,
    record,
    sql,
)

SUBJECTS = [("alice" if i % 4 == 1 else f"subject-{i}") for i in range(12)]


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path)


def _alices(url: str) -> list[str]:
    store = open_store(url, create=False)
    try:
        rows = query_events(store, EventFilter(subject=pseudonym("alice")), limit=None)
    finally:
        store.close()
    return [row.event.event_id for row in rows]


def test_an_event_taken_out_of_the_subject_index_is_named(
        tmp_path: Path, audit_keys: AuditKeys) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    events = record(url, audit_keys, SUBJECTS, checkpoint_every=5)
    alices = [ev for ev in events if ev.subject == pseudonym("alice")]
    assert sorted(_alices(url)) == sorted(ev.event_id for ev in alices)
    assert check(url, audit_keys).ok

    hidden = alices[1]
    token = SUBJECT_TOKEN.format("subject")
    sql(url, "INSERT INTO audit_subject (audit_subject, rowid, token) "
             f"SELECT 'delete', rowid, {token} FROM audit_event WHERE event_id = ?",
        (hidden.event_id,))
    assert hidden.event_id not in _alices(url)  # the attack: gone from alice's report

    report = check(url, audit_keys)
    # Before: ok (the events and chains are untouched).
    assert not report.ok
    assert [(p.kind, p.event_id) for p in report.problems] == [("unindexed", hidden.event_id)]
    done = cli_verify(url, audit_keys, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TAMPERED" in done.stdout


def test_an_entry_pointing_elsewhere_does_not_stand_for_a_missing_one(
        tmp_path: Path, audit_keys: AuditKeys) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    events = record(url, audit_keys, SUBJECTS, checkpoint_every=5)
    hidden = next(ev for ev in events if ev.subject == pseudonym("alice"))
    token = SUBJECT_TOKEN.format("subject")
    sql(url, "INSERT INTO audit_subject (audit_subject, rowid, token) "
             f"SELECT 'delete', rowid, {token} FROM audit_event WHERE event_id = ?",
        (hidden.event_id,))
    sql(url, f"INSERT INTO audit_subject (rowid, token) SELECT 100000, {token} "
             "FROM audit_event WHERE event_id = ?", (hidden.event_id,))  # counts balanced
    assert [(p.kind, p.event_id) for p in check(url, audit_keys).problems] == [
        ("unindexed", hidden.event_id)]


@pytest.mark.parametrize("statement", [
    "DROP TABLE audit_subject",
    "DROP TABLE audit_subject; CREATE TABLE audit_subject (token TEXT)",
])
def test_a_subject_index_dropped_or_replaced_is_named_not_a_crash(
        tmp_path: Path, audit_keys: AuditKeys, statement: str) -> None:
    """Verify stopped with a traceback (no such fts5 table) where it names the index."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    record(url, audit_keys, SUBJECTS, checkpoint_every=5)
    for one in statement.split("; "):
        sql(url, one)
    report = check(url, audit_keys)
    assert [(p.kind, p.writer_id) for p in report.problems] == [("unindexed", "(subject index)")]
    done = cli_verify(url, audit_keys, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TAMPERED" in done.stdout
    assert "Traceback" not in done.stderr
