"""An event handed to the trail without trace ids gets the current span's, as before.

``_traced`` reads the span ``trace.get_current_span()`` finds without its layers; for
every kind of current context (none, the invalid span, a span with ids, one without,
a recording span of the SDK) its fields are the ones the API's own look-up gives,
key order included, and an outcome queued under a span is written with its ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext
from opentelemetry.trace.propagation import _SPAN_KEY

from guard._guard import Guard
from guard._types import HttpContext, Request
from guard.audit import EventFilter, open_store, query_events
from guard.audit._jtrail import _traced
from guard.audit._otel import span_ids
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from tests.guard.audit.conftest import keys_at, make_trail

KEY = b"t" * 32
POLICY = load_policy(Path(__file__).resolve().parents[3] / "policies")
SDK = TracerProvider().get_tracer("test")


def _by_the_api(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the trail handed over before: ``trace.get_current_span()``'s ids first, if any."""
    if "trace_id" in fields:
        return fields
    trace_id, span_id = span_ids(trace.get_current_span().get_span_context())
    ids = {"trace_id": trace_id, "span_id": span_id} if trace_id and span_id else {}
    return {**ids, **fields} if ids else fields


ids = st.integers(0, 2**64 - 1)
spans = st.one_of(
    st.none(),  # nothing current
    st.just(INVALID_SPAN),
    st.builds(lambda t, s: NonRecordingSpan(SpanContext(t, s, is_remote=False)),
              st.integers(0, 2**128 - 1), ids),  # ids of 0 make an invalid context
    st.just("sdk"),  # a recording span of the SDK's
    st.just("not a span"),  # a value that is no span under the API's span key
)
events = st.one_of(
    st.fixed_dictionaries({"decision_ref": st.text(max_size=4), "http_status": st.integers()}),
    st.fixed_dictionaries({"trace_id": st.none(), "span_id": st.none(), "x": st.integers()}),
)


@given(spans, events)
def test_the_ids_are_the_apis(span: Any, fields: dict[str, Any]) -> None:
    if span == "sdk":
        with SDK.start_as_current_span("outcome"):
            got, want = _traced(fields), _by_the_api(fields)
    elif span == "not a span":
        token = context.attach(context.set_value(_SPAN_KEY, span))
        try:
            got, want = _traced(fields), _by_the_api(fields)
        finally:
            context.detach(token)
    elif span is None:
        got, want = _traced(fields), _by_the_api(fields)
    else:
        with trace.use_span(span):
            got, want = _traced(fields), _by_the_api(fields)
    assert got == want
    assert list(got) == list(want)


def test_an_outcome_queued_under_a_span_carries_its_ids(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    trail = make_trail(f"sqlite:///{db}", keys_at(tmp_path / "sign.key"), hmac_key=KEY,
                       journal=tmp_path / "audit.db.journal")
    with Guard(PolicyHolder(lambda: POLICY), trail, hmac_key=KEY) as guard:
        checked = guard.check(Request("svc:crm", "relationship.management", ("contact",)))

        async def queue() -> trace.SpanContext:
            with SDK.start_as_current_span("request") as span:
                assert guard.enqueue_outcome(checked.decision_id, 204,
                                             HttpContext("PUT", "/x/{y}", 204))
                spanned = span.get_span_context()
            assert guard.enqueue_outcome(checked.decision_id, 500, HttpContext("PUT", "/x/{y}"))
            return spanned

        spanned = asyncio.run(queue())
        guard.trail.flush()
    store = open_store(f"sqlite:///{db}")
    try:
        rows = query_events(store, EventFilter(kind="outcome"))
    finally:
        store.close()
    got = {row.event.http_status: (row.event.trace_id, row.event.span_id) for row in rows}
    assert got == {204: (format(spanned.trace_id, "032x"), format(spanned.span_id, "016x")),
                   500: (None, None)}
