"""SQLite's subject index (``audit_subject``, FTS5 kept by triggers): exactly a subject's events.

Random histories of a store (batches indexed, some sent again, rows deleted or
their subject changed as a tamperer would, subjects of any text: empty, long,
quotes, operators of the FTS query syntax) on real stores: the events the query
layer finds for each subject are those a plain scan finds, and the index holds one
entry per stored row of the subject (none left behind, none twice).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard.audit import EventFilter, EventKind, Store, open_store, query_events
from guard.audit._fields import compact
from guard.audit._schema import SUBJECT_TOKEN
from tests.guard.audit.conftest import make_event, row_of, sql

SUBJECTS = ("", "a", "A", "a b", '"quoted"', "NOT", "x OR y", "*", "é", "\x00", "s" * 64,
            "s" * 12, "s" * 12 + "t", "y" * 40_000, None)  # 's' * 12...: one token, apart

batches = st.lists(st.lists(st.tuples(st.sampled_from(SUBJECTS), st.booleans()),
                            min_size=1, max_size=8), min_size=1, max_size=5)
changes = st.lists(st.tuples(st.sampled_from(("delete", "update", "again")),
                             st.integers(0, 39), st.sampled_from(SUBJECTS)), max_size=6)


@pytest.fixture
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path_factory.mktemp('fts') / 'audit.db'}")
    yield opened
    opened.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches, changes)
def test_a_subjects_events_are_exactly_those_a_scan_finds(
        store: Store, history: list[list[tuple[str | None, bool]]],
        edits: list[tuple[str, int, str | None]]) -> None:
    sql(store.url, "DELETE FROM audit_event")
    rows = []
    for number, batch in enumerate(history):
        records = []
        for subject, allowed in batch:
            event = make_event(EventKind.DECISION, subject=subject, allowed=allowed,
                               writer_id="w", seq=len(rows) + 1)
            rows.append(row_of(event))
            records.append(compact(rows[-1]))
        store.index_records(records, "journal-t", number)
    for what, at, subject in edits:
        event_id = rows[at % len(rows)][0]
        if what == "delete":
            sql(store.url, "DELETE FROM audit_event WHERE event_id = ?", (event_id,))
        elif what == "update":
            sql(store.url, "UPDATE audit_event SET subject = ? WHERE event_id = ?",
                 (subject, event_id))
        else:  # sent again: stored once
            store.index_records([compact(rows[at % len(rows)])], "journal-t", len(history))
    for subject in SUBJECTS:
        if subject is None:
            continue
        found = [r.event.event_id for r in query_events(
            store, EventFilter(subject=subject), limit=None, oldest_first=True)]
        scanned = [r[0] for r in store.rows(
            "SELECT event_id FROM audit_event WHERE kind = 'decision' AND subject = ? "
            "ORDER BY ts, event_id", (subject,))]
        assert found == scanned
        entries = store.rows("SELECT count(*) FROM audit_subject "
                             f"WHERE audit_subject MATCH {SUBJECT_TOKEN.format('?')}", (subject,))
        assert entries == store.rows(  # subjects of a token, the first 12 characters
            "SELECT count(*) FROM audit_event WHERE subject IS NOT NULL AND "
            f"{SUBJECT_TOKEN.format('subject')} = "
            f"{SUBJECT_TOKEN.format('?')}", (subject,))
