"""The subject's reply read from a real store (SQLite and PostgreSQL): once, and the same."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from subjectkit import subject_decisions, write_decisions

from guard.audit import (
    AuditEvent,
    EventFilter,
    EventKind,
    Store,
    open_store,
    query_events,
    subject_report,
)
from middleware.console._subject import subject_view
from middleware.console._views import _page_number

PSEUDONYM = "5" * 64
OTHER = "6" * 64


class Counting:
    """A real store that counts the reads of the event table."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.url = store.url
        self.event_reads = 0

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if "FROM audit_event" in sql:
            self.event_reads += 1
        return self.store.rows(sql, params)


@pytest.fixture
def filled(store_url: str) -> Iterator[Store]:
    """A store with 70 decisions about the subject (one in seven refused), some of them
    with outcome events that change their status, and another subject's decisions."""
    store = open_store(store_url)
    mine = subject_decisions(PSEUDONYM, 70)
    write_decisions(store, [*mine, *subject_decisions(OTHER, 20)])
    outcomes = [AuditEvent(event_id=f"{n:08x}-0000-7000-9000-000000000001",
                           kind=EventKind.OUTCOME, ts=mine[i].ts, decision_ref=mine[i].event_id,
                           http_status=status, writer_id="outcomes", seq=n)
                for n, (i, status) in enumerate(((0, 500), (0, 502), (5, 204), (3, 499)), 1)]
    write_decisions(store, outcomes)
    try:
        yield store
    finally:
        store.close()


def test_the_reply_reads_the_subjects_decisions_once(filled: Store) -> None:
    counting = Counting(filled)
    view = subject_view(counting, PSEUDONYM, None)  # type: ignore[arg-type]
    assert len(view.decisions) == 70
    assert counting.event_reads == 1


def test_the_reply_agrees_with_the_audit_layers_report_and_query(filled: Store) -> None:
    view = subject_view(filled, PSEUDONYM, None)
    expected = subject_report(filled, PSEUDONYM)
    got = view.report
    assert (got.subject, got.recipients, got.accesses, got.denied_attempts, got.register) == (
        expected.subject, expected.recipients, expected.accesses, expected.denied_attempts,
        expected.register)
    assert got.denied_attempts == 10
    queried = query_events(filled, EventFilter(subject=PSEUDONYM), limit=None)[::-1]
    assert [(r.event, r.status) for r in view.decisions] == [
        (q.event, q.outcome_status) for q in queried]
    statuses = [r.status for r in view.decisions]
    assert statuses[0] == 502
    assert statuses[5] == 204
    assert statuses[3] == 499
    assert statuses[1] == 200
    assert statuses[10] == 403


@pytest.mark.parametrize(("text", "pages", "number"), [
    ("", 3, 1), ("2", 3, 2), ("3", 3, 3), ("9", 3, 3), ("0", 3, 1), ("-1", 3, 1),
    ("two", 3, 1), ("1" * 40, 3, 1), ("1", 1, 1)])
def test_the_report_page_asked_for_is_kept_within_the_pages(
        text: str, pages: int, number: int) -> None:
    assert _page_number(text, pages) == number
