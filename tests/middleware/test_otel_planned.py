"""A write and a denial judged on the planned path put their decision on the server span.

The planner hands the span the middleware read to the outcome of a decision it records
now (a write, a denial), instead of it being looked up again: the second request of
each kind (its route and token seen before, so planned) must still carry the decision
and its id on the server span of opentelemetry-instrumentation-fastapi.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tokenkit import Keys, guard_settings

from examples.customers import DEMOS, create_app, mint_tokens
from guard._guard import Guard
from middleware import GuardMiddleware

instrumentation = pytest.importorskip(
    "opentelemetry.instrumentation.fastapi",
    reason="pip install opentelemetry-instrumentation-fastapi==0.66b2",
)
pytestmark = pytest.mark.anyio


async def test_planned_writes_and_denials_carry_their_decision(keys: Keys, tmp_path: Path
                                                               ) -> None:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, guard=guard)
    instrumentation.FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    tokens = mint_tokens(settings)
    write = next(d for d in DEMOS if d.method == "PUT" and d.reason == "allowed")
    deny = next(d for d in DEMOS if d.reason == "category_not_in_purpose")
    answers: list[httpx.Response] = []
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://svc") as client:
            for demo in (write, deny) * 2:  # the second of each: planned
                answers.append(await client.request(
                    demo.method, demo.path, content=demo.body, headers={
                        "authorization": f"Bearer {tokens[demo]}",
                        "x-purpose": demo.purpose or "", "content-type": "application/json"}))
        planned: Any = app.middleware_stack
        while not isinstance(planned, GuardMiddleware):
            planned = planned.app
        seen = planned._planner.seen  # what the planned path keeps per route, caller, purpose
    finally:
        instrumentation.FastAPIInstrumentor.uninstrument_app(app)
        guard.close()
    assert len(seen) == 2
    assert [a.status_code for a in answers] == [200, 403, 200, 403]
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(servers) == 4
    ids = [answers[0].headers["x-guard-decision-id"], answers[1].json()["decision_id"],
           answers[2].headers["x-guard-decision-id"], answers[3].json()["decision_id"]]
    assert len(set(ids)) == 4
    for span, decision_id, reason in zip(servers, ids, ["allowed", deny.reason] * 2,
                                         strict=True):
        assert span.attributes is not None
        assert span.attributes["guard.decision_id"] == decision_id
        assert span.attributes["guard.reason"] == reason
