"""An allowed read reads the current OpenTelemetry span once, from decide to the queued commit.

Without the OpenTelemetry SDK the decision span is the current span itself (or its ids
on a non-recording span), so the guard reads the current span once and carries its
ids in the event's fields; the trail does not look them up again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from guard.audit import open_store
from guard.audit._otel import makes_no_span, span_ids
from guard.audit._otel import tracer as default_tracer
from tests.guard.test_guard_commit import ALLOWED, _guard


@pytest.fixture
def looked_up(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the current span was asked for (by anything on the path)."""
    calls: list[int] = []
    real = trace.get_current_span

    def counted(context: object = None) -> trace.Span:
        calls.append(1)
        return real(context)  # type: ignore[arg-type]

    # the API's no-op tracer reads it through the trace package's own namespace
    monkeypatch.setattr(trace, "get_current_span", counted)
    return calls


def test_an_allowed_read_reads_the_current_span_once(tmp_path: Path,
                                                     looked_up: list[int]) -> None:
    guard = _guard(tmp_path)

    async def run() -> str:
        ruling = guard.decide(ALLOWED)
        future = guard.begin_commit(ruling, 200)
        assert len(looked_up) == 1  # decide; the queued commit asks no more
        return await future

    try:
        event_id = asyncio.run(run())
    finally:
        guard.close()
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:
        [(trace_id, span_id)] = store.rows(
            "SELECT trace_id, span_id FROM audit_event WHERE event_id = ?", (event_id,))
    finally:
        store.close()
    assert (trace_id, span_id) == (None, None)  # no span: none recorded


def test_the_ids_are_the_current_spans_when_the_tracer_makes_none(tmp_path: Path) -> None:
    guard = _guard(tmp_path)
    context = trace.SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331,
                                is_remote=True, trace_flags=trace.TraceFlags(1))
    try:
        with trace.use_span(trace.NonRecordingSpan(context)):
            ruling = guard.decide(ALLOWED)
    finally:
        guard.close()
    assert ruling.fields is not None
    assert (ruling.fields["trace_id"], ruling.fields["span_id"]) == (
        "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert span_ids(trace.INVALID_SPAN_CONTEXT) == (None, None)


def test_only_the_apis_own_tracers_make_no_span() -> None:
    assert makes_no_span(trace.NoOpTracer())
    assert makes_no_span(default_tracer) == (trace._TRACER_PROVIDER is None)
    assert not makes_no_span(TracerProvider().get_tracer("guard"))
