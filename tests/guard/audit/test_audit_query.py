"""Queries over both stores: tree-aware filters, the subject's pseudonym, reports, stats."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import pytest

from guard.audit import (
    AuditQueryError,
    AuditStoreError,
    EventFilter,
    EventKind,
    Store,
    open_store,
    parse_when,
    pseudonymise,
    query_events,
    stats,
    subject_report,
)
from guard.audit._event import outcome_fields, policy_fields
from guard.audit._report import render_json, render_markdown
from tests.guard.audit.conftest import (
    HMAC_KEY,
    Keys,
    Recording,
    decision_event,
    make_event,
    make_trail,
    record,
)

ALICE = pseudonymise(HMAC_KEY, "alice")
D = "2026-11-{:02d}T10:00:00.000000Z"


@pytest.fixture
def store(store_url: str, keys: Keys) -> Store:
    trail = make_trail(store_url, keys)
    rows = [
        ("svc:marketing", "marketing.advertising", ("contact.email",), True, "allowed", "alice", 1),
        ("svc:marketing", "marketing.recommendations", ("profile.interests",), True, "allowed",
         "bob", 2),
        ("svc:marketing", "marketingfoo.x", ("contactless",), True, "allowed", "bob", 3),
        ("svc:billing", "order.processing", ("financial.payment_card", "contact"), True,
         "allowed", "alice", 4),
        ("grp:exalens-us", "business.administration", ("identity.name",), False,
         "transfer_not_safeguarded", "alice", 5),
        ("svc:crm", "relationship.management", ("special.health",), False, "special_category",
         None, 6),
    ]
    for caller, purpose, cats, allowed, reason, subject, day in rows:
        record(trail, decision_event(
            caller=caller, purpose=purpose, categories=cats, allowed=allowed, reason=reason,
            subject_id=subject, ts=D.format(day),
            lawful_basis=("legitimate_interest",) if allowed else (),
        ))
    trail.flush()
    billing = query_by(trail.store, caller="svc:billing")[0]
    record(trail, make_event(EventKind.OUTCOME, **outcome_fields(billing, 200, None)))
    trail.close()
    reader = open_store(store_url, create=False)
    yield reader
    reader.close()


def query_by(store: Store, **filters: object) -> list[str]:
    return [r.event.event_id for r in query_events(store, EventFilter(**filters))]  # type: ignore[arg-type]


def purposes(store: Store, **filters: object) -> list[str]:
    return sorted(r.event.purpose for r in query_events(store, EventFilter(**filters)))  # type: ignore[arg-type]


def test_purpose_filter_is_tree_aware(store: Store) -> None:
    assert purposes(store, purpose="marketing") == ["marketing.advertising",
                                                    "marketing.recommendations"]
    assert purposes(store, purpose="marketing.advertising") == ["marketing.advertising"]
    assert purposes(store, purpose="order") == ["order.processing"]


def test_category_filter_is_tree_aware(store: Store) -> None:
    assert purposes(store, category="contact") == ["marketing.advertising", "order.processing"]
    assert purposes(store, category="contact.email") == ["marketing.advertising"]
    assert purposes(store, category="special") == ["relationship.management"]


def test_other_filters(store: Store) -> None:
    assert purposes(store, subject=ALICE) == ["business.administration",
                                              "marketing.advertising", "order.processing"]
    assert purposes(store, allowed=False) == ["business.administration",
                                              "relationship.management"]
    assert purposes(store, reason="special_category") == ["relationship.management"]
    assert purposes(store, caller="svc:billing") == ["order.processing"]
    assert purposes(store, since=D.format(4), until=D.format(6)) == [
        "business.administration", "order.processing"]
    newest = query_events(store, EventFilter(), limit=2)
    assert [r.event.ts for r in newest] == [D.format(6), D.format(5)]


def test_outcome_status_is_joined(store: Store) -> None:
    [row] = query_events(store, EventFilter(caller="svc:billing"))
    assert row.outcome_status == 200


def test_subject_report_lists_every_recipient(store: Store) -> None:
    report = subject_report(store, ALICE)
    assert [r.recipient for r in report.recipients] == ["svc:billing", "svc:marketing"]
    assert [(a.recipient, a.purpose, a.categories, a.lawful_basis, a.when, a.outcome_status)
            for a in report.accesses] == [
        ("svc:marketing", "marketing.advertising", ("contact.email",),
         ("legitimate_interest",), D.format(1), None),
        ("svc:billing", "order.processing", ("financial.payment_card", "contact"),
         ("legitimate_interest",), D.format(4), 200),
    ]
    assert report.denied_attempts == 1
    markdown = render_markdown(report)
    assert "| svc:billing | internal | GB | order.processing |" in markdown
    assert "alice" not in markdown
    assert json.loads(render_json(report))["denied_attempts"] == 1


def test_a_report_whose_register_cannot_be_read_is_an_error(store_url: str, store: Store) -> None:
    """A report never says "no rights request" for a register it could not read."""
    from tests.guard.audit.conftest import sql

    sql(store_url, "ALTER TABLE subject_register RENAME TO subject_register_gone")
    with pytest.raises(AuditStoreError, match="subject_register"):
        subject_report(store, ALICE)


def test_markdown_of_a_report_without_accesses_lists_the_register() -> None:
    from guard.audit._report import RightsEntry, SubjectReport

    entry = RightsEntry(1, "objection", "marketing", "2026-11-01", "2026-11-01T09:00:00Z",
                        "cli:a|b", "", "e-1")
    text = render_markdown(SubjectReport(ALICE, "2026-11-30T10:00:00Z", (), (), 2, (entry,)))
    assert "- Accesses: 0 by 0 recipient(s); 2 refused request(s)\n" in text
    assert "## Recipients\n\nNo recipient has accessed this person's data.\n" in text
    assert "## Every access" not in text
    assert text.endswith(
        "| # | effective | entry | purpose | recorded | by | reference |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        "| 1 | 2026-11-01 | objection | marketing | 2026-11-01T09:00:00Z | cli:a\\|b | - |\n")


def test_stats_put_denials_first(store: Store) -> None:
    result = stats(store, EventFilter(since=D.format(1)))
    assert (result.total, result.allowed, result.denied) == (6, 4, 2)
    assert [c.key for c in result.by_reason] == ["special_category", "transfer_not_safeguarded",
                                                 "allowed"]
    assert result.by_caller[0].denied == 1
    assert result.by_caller[-1].denied == 0
    assert {c.key: c.total for c in result.by_caller}["svc:marketing"] == 3


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("7d", "2026-11-18T12:00:00.000000Z"),
    ("12h", "2026-11-25T00:00:00.000000Z"),
    ("2026-11-01", "2026-11-01T00:00:00.000000Z"),
    ("2026-11-01T09:30:00Z", "2026-11-01T09:30:00.000000Z"),
    ("2026-11-01T10:30:00+01:00", "2026-11-01T09:30:00.000000Z"),
])
def test_parse_when(text: str, expected: str) -> None:
    assert parse_when(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7x", "", "2026-13-01"])
def test_parse_when_rejects_nonsense(text: str) -> None:
    with pytest.raises(AuditQueryError, match="--since"):
        parse_when(text)


def test_policy_events_are_not_decisions(store_url: str, keys: Keys) -> None:
    trail = make_trail(store_url, keys)
    record(trail, make_event(EventKind.POLICY_REJECTED,
                            **policy_fields(EventKind.POLICY_REJECTED, "v1", "bad rule")))
    trail.close()
    reader = open_store(store_url, create=False)
    assert query_events(reader, EventFilter()) == []
    [row] = query_events(reader, EventFilter(kind="policy_rejected"))
    reader.close()
    assert (row.event.policy_version, row.event.detail) == ("v1", "bad rule")


@pytest.mark.parametrize("text", ["1000000d", "99999999w", "9999-12-31T23:00:00-05:00",
                                  "0001-01-01T01:00:00+05:00"])
def test_a_moment_outside_the_calendar_is_a_query_error(text: str) -> None:
    """Every caller (the CLI, the console's filters) gets one readable line, not a crash."""
    with pytest.raises(AuditQueryError, match="outside the years 1 to 9999"):
        parse_when(text, option="since", now=NOW)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # the FTS5 index is SQLite's
def test_every_subject_query_on_sqlite_uses_the_subject_index(store: Store) -> None:
    """The CLI's query and stats, the report and the console find a subject's events through
    SQLite's FTS5 subject index (``audit_subject``), never by a scan of ``audit_event``."""
    from middleware.console._data import subject_events

    recorded = Recording(store)
    where = EventFilter(subject=ALICE)
    query_events(recorded, where)
    assert stats(recorded, where).total == 3
    assert subject_report(recorded, ALICE).denied_attempts == 1
    assert len(subject_events(recorded, ALICE)) == 3
    chosen = [(sql, params) for sql, params in recorded.queries
              if ALICE in params and "FROM audit_event e" in sql]
    assert len(chosen) == 8  # query, stats' four, the report's two, the console's
    conn = sqlite3.connect(store.url.removeprefix("sqlite:///"))
    try:
        for sql, params in chosen:
            plan = [str(r[3]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert any("audit_subject VIRTUAL TABLE" in line for line in plan), (sql, plan)
            assert not any(line.startswith("SCAN e") for line in plan), (sql, plan)
    finally:
        conn.close()
