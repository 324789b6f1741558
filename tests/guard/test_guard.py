"""``Guard``: decide, record durably before answering, fail closed, trace every decision."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guard import HttpContext, Reason, Request
from guard._guard import Guard
from guard._types import denial
from guard.audit import (
    EventFilter,
    EventKind,
    JournalTrail,
    Store,
    open_store,
    pseudonymise,
    query_events,
    wait_indexed,
)
from guard.config import AuditSettings, PolicySettings, Settings
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from tests.guard.audit.conftest import keys_at, make_trail

KEY = b"s" * 32
ALLOWED = Request("svc:crm", "relationship.management", ("contact",), subject="cust-7")
DENIED = Request("svc:crm", "relationship.management", ("special.health",), subject="cust-7")


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


def journal_trail(db: Path, tmp_path: Path) -> JournalTrail:
    """A trail on the SQLite store ``db``, its journal beside it (as the settings make it)."""
    return make_trail(f"sqlite:///{db}", keys_at(tmp_path / "sign.key"), hmac_key=KEY,
                      journal=db.with_name(db.name + ".journal"))


@contextlib.contextmanager
def journal_refuses(trail: JournalTrail) -> Iterator[None]:
    """The journal's disk is full (its file is /dev/full) for the length of the ``with``."""
    full = os.open("/dev/full", os.O_WRONLY)
    good = os.dup(trail.journal._fd)
    os.dup2(full, trail.journal._fd)
    try:
        yield
    finally:
        os.dup2(good, trail.journal._fd)
        os.close(full)
        os.close(good)


def make_guard(db: Path, tmp_path: Path, spans: InMemorySpanExporter) -> Guard:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trail = journal_trail(db, tmp_path)
    holder = PolicyHolder(lambda: load_policy(None))
    return Guard(holder, trail, hmac_key=KEY, tracer=provider.get_tracer("test"))


@pytest.fixture
def guard(db: Path, tmp_path: Path, spans: InMemorySpanExporter) -> Iterator[Guard]:
    g = make_guard(db, tmp_path, spans)
    yield g
    g.close()


def reader(db: Path) -> Store:
    """The store, once it indexes every event the journal holds."""
    wait_indexed(AuditSettings(store=f"sqlite:///{db}"))
    return open_store(f"sqlite:///{db}", create=False)


def test_check_records_the_decision_before_returning(guard: Guard, db: Path) -> None:
    checked = guard.check(ALLOWED, HttpContext("GET", "/customers/{id}/email"))
    assert checked.decision.allowed
    store = reader(db)  # read while the guard is still open: durable, then indexed
    [row] = query_events(store, EventFilter())
    store.close()
    event = row.event
    assert event.event_id == checked.decision_id
    assert (event.caller, event.party_type, event.country, event.purpose) == (
        "svc:crm", "internal", "GB", "relationship.management")
    assert (event.allowed, event.reason, event.categories, event.action) == (
        True, "allowed", ("contact",), "read")
    assert event.lawful_basis == checked.decision.lawful_basis
    assert event.rule == checked.decision.rule
    assert event.policy_version == guard.holder.current.version
    assert event.subject == pseudonymise(KEY, "cust-7")
    assert (event.http_method, event.http_route) == ("GET", "/customers/{id}/email")
    assert event.latency_us is not None
    assert event.latency_us >= 0


def test_denials_are_recorded_with_their_reason(guard: Guard, db: Path) -> None:
    checked = guard.check(DENIED)
    assert checked.decision.reason is Reason.SPECIAL_CATEGORY
    store = reader(db)
    [row] = query_events(store, EventFilter(allowed=False))
    store.close()
    assert row.event.reason == "special_category"


def test_decision_span_nests_under_the_current_span(
    guard: Guard, db: Path, spans: InMemorySpanExporter
) -> None:
    tracer = guard._tracer
    with tracer.start_as_current_span("GET /customers") as http_span:
        checked = guard.check(ALLOWED)
    finished = {s.name: s for s in spans.get_finished_spans()}
    decision = finished["guard.decision"]
    assert decision.parent is not None
    assert decision.parent.span_id == http_span.get_span_context().span_id
    assert decision.attributes is not None
    assert decision.attributes["guard.allowed"] is True
    assert decision.attributes["guard.reason"] == "allowed"
    store = reader(db)
    [row] = query_events(store, EventFilter())
    store.close()
    assert row.event.event_id == checked.decision_id
    assert row.event.trace_id == format(http_span.get_span_context().trace_id, "032x")
    assert row.event.span_id == format(decision.context.span_id, "016x")


def test_a_decision_that_cannot_be_recorded_is_a_denial(
    db: Path, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    guard = make_guard(db, tmp_path, spans)
    with journal_refuses(guard.trail):
        checked = guard.check(ALLOWED)
        assert not checked.decision.allowed
        assert checked.decision.reason is Reason.AUDIT_UNAVAILABLE
        achecked = asyncio.run(guard.acheck(ALLOWED))
        assert achecked.decision.reason is Reason.AUDIT_UNAVAILABLE
        ok, why = guard.ready()
        assert not ok
        assert "refused the write" in why
    assert guard.check(ALLOWED).decision.allowed  # back: allowed again
    assert guard.ready()[0]
    guard.close()
    with pytest.raises(Exception, match="closed"):
        guard.trail.record_fields(EventKind.OUTCOME, {"decision_ref": "x", "http_status": 200})
    assert guard.check(ALLOWED).decision.reason is Reason.AUDIT_UNAVAILABLE


def test_acheck_and_outcomes(guard: Guard, db: Path) -> None:
    async def main() -> list[str]:
        checks = await asyncio.gather(*(guard.acheck(ALLOWED) for _ in range(20)))
        assert all(c.decision.allowed for c in checks)
        ok = await guard.arecord_outcome(checks[0].decision_id, 204, HttpContext("GET", "/x"))
        assert ok
        return [c.decision_id for c in checks]

    ids = asyncio.run(main())
    assert guard.record_outcome(ids[1], 500)
    store = reader(db)
    rows = query_events(store, EventFilter(), limit=None)
    outcomes = {r.event.decision_ref: r.event.http_status
                for r in query_events(store, EventFilter(kind="outcome"), limit=None)}
    store.close()
    assert {r.event.event_id for r in rows} == set(ids)
    assert outcomes == {ids[0]: 204, ids[1]: 500}
    assert {r.event.event_id: r.outcome_status for r in rows}[ids[0]] == 204


def test_from_settings_records_policy_loads_and_rejections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARD_CONFIG", str(tmp_path / "none.toml"))
    policy = tmp_path / "policies"
    shutil.copytree(Path(__file__).resolve().parents[2] / "policies", policy)
    settings = Settings(
        policy=PolicySettings(dir=policy),
        audit=AuditSettings(store=f"sqlite:///{tmp_path / 'a.db'}",
                            hmac_key=tmp_path / "k" / "hmac.key",
                            signing_key=tmp_path / "k" / "sign.key"),
    )
    guard = Guard.from_settings(settings)
    assert (tmp_path / "k" / "hmac.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "sign.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "sign.key.pub").exists()
    version = guard.holder.current.version
    rules = policy / "rules.csv"
    rules.write_text(rules.read_text() + "\np, svc:crm, relationship.management, special\n")
    result = guard.holder.reload()
    assert not result.ok
    assert guard.check(ALLOWED).decision.allowed  # the last good policy stays
    guard.close()
    store = open_store(settings.audit.store, create=False)
    loaded = query_events(store, EventFilter(kind="policy_loaded"))
    rejected = query_events(store, EventFilter(kind="policy_rejected"))
    store.close()
    assert [r.event.policy_version for r in loaded] == [version]
    assert [r.event.policy_version for r in rejected] == [version]
    assert rejected[0].event.detail


def test_record_denial_writes_the_refusal_the_enforcement_point_made(
    guard: Guard, db: Path
) -> None:
    request = Request("", "relationship.management", ("contact",))
    refusal = denial(Reason.UNAUTHENTICATED, request, guard.holder.current.version)
    checked = guard.record_denial(request, refusal, HttpContext("GET", "/customers/{id}"))
    achecked = asyncio.run(guard.arecord_denial(request, refusal, HttpContext("GET", "/x")))
    assert checked.decision is refusal
    assert achecked.decision is refusal
    store = reader(db)  # durable before returning
    rows = {r.event.event_id: r.event for r in query_events(store, EventFilter(), limit=None)}
    store.close()
    assert set(rows) == {checked.decision_id, achecked.decision_id}
    event = rows[checked.decision_id]
    assert (event.kind, event.allowed, event.reason) == ("decision", False, "unauthenticated")
    assert (event.http_method, event.http_route) == ("GET", "/customers/{id}")
    assert event.policy_version == guard.holder.current.version
    with pytest.raises(ValueError, match="denials only"):
        guard.record_denial(ALLOWED, guard.holder.decide(ALLOWED))


def test_a_denial_that_cannot_be_recorded_stands_without_an_id(
    db: Path, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    guard = make_guard(db, tmp_path, spans)
    refusal = denial(Reason.ROUTE_NOT_DECLARED, DENIED)
    with journal_refuses(guard.trail):
        checked = asyncio.run(guard.arecord_denial(DENIED, refusal))
    guard.close()
    assert checked.decision is refusal
    assert checked.decision_id == ""


def test_enqueued_outcomes_are_written_by_a_later_commit(guard: Guard, db: Path) -> None:
    checked = guard.check(ALLOWED)

    async def main() -> bool:
        return guard.enqueue_outcome(checked.decision_id, 201, HttpContext("POST", "/x"))

    assert asyncio.run(main())  # returns on the loop without waiting for the commit
    guard.trail.flush()
    store = reader(db)
    [outcome] = query_events(store, EventFilter(kind="outcome"))
    [row] = query_events(store, EventFilter(kind="decision"))
    store.close()
    assert (outcome.event.decision_ref, outcome.event.http_status) == (checked.decision_id, 201)
    assert row.outcome_status == 201
    guard.close()
    assert guard.enqueue_outcome(checked.decision_id, 200) is False  # closed: not queued


def test_a_non_recording_decision_span_keeps_the_parent_trace_ids(
    db: Path, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trail = journal_trail(db, tmp_path)
    guard = Guard(PolicyHolder(lambda: load_policy(None)), trail, hmac_key=KEY,
                  tracer=trace.NoOpTracer())
    with provider.get_tracer("server").start_as_current_span("GET /customers") as http_span:
        checked = asyncio.run(guard.acheck(ALLOWED))
    guard.close()
    assert [s.name for s in spans.get_finished_spans()] == ["GET /customers"]
    store = reader(db)
    [row] = query_events(store, EventFilter())
    store.close()
    context = http_span.get_span_context()
    assert row.event.event_id == checked.decision_id
    assert row.event.trace_id == format(context.trace_id, "032x")
    assert row.event.span_id == format(context.span_id, "016x")
