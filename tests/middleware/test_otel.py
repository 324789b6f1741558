"""Decision attributes land on the server span of opentelemetry-instrumentation-fastapi.

The second test covers the planned path: the planner hands the span the middleware read
to the outcome of a decision it records now (a write, a denial), instead of it being
looked up again; the second request of each kind (its route and token seen before, so
planned) must still carry the decision and its id on the server span.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
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


@dataclass
class Traced:
    """The example service, instrumented, with its spans kept in memory and its tokens."""

    app: FastAPI
    exporter: InMemorySpanExporter
    tokens: dict[Any, str]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app),
                                 base_url="http://svc")

    def servers(self) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.kind is SpanKind.SERVER]


@pytest.fixture
def traced(keys: Keys, tmp_path: Path) -> Iterator[Traced]:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, guard=guard)
    instrumentation.FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    try:
        yield Traced(app, exporter, mint_tokens(settings))
    finally:
        instrumentation.FastAPIInstrumentor.uninstrument_app(app)
        guard.close()


async def test_server_span_carries_the_decision(traced: Traced) -> None:
    tokens = traced.tokens
    allow = DEMOS[0]
    deny = next(d for d in DEMOS if d.reason == "category_not_in_purpose")
    async with traced.client() as client:
        ok = await client.get(allow.path, headers={
            "authorization": f"Bearer {tokens[allow]}", "x-purpose": allow.purpose or ""})
        no = await client.get(deny.path, headers={
            "authorization": f"Bearer {tokens[deny]}", "x-purpose": deny.purpose or ""})
    assert ok.status_code == 200
    assert no.status_code == 403
    assert no.json()["reason"] == "category_not_in_purpose"
    servers = traced.servers()
    assert len(servers) == 2
    by_reason = {s.attributes["guard.reason"]: s for s in servers if s.attributes}
    assert set(by_reason) == {"allowed", "category_not_in_purpose"}
    allowed = by_reason["allowed"].attributes
    assert allowed is not None
    assert allowed["guard.allowed"] is True
    assert allowed["guard.caller"] == "svc:crm"
    assert allowed["guard.decision_id"] == ok.headers["x-guard-decision-id"]
    denied = by_reason["category_not_in_purpose"].attributes
    assert denied is not None
    assert denied["guard.decision_id"] == no.json()["decision_id"]
    assert 403 in (denied.get("http.response.status_code"), denied.get("http.status_code"))


async def test_planned_writes_and_denials_carry_their_decision(traced: Traced) -> None:
    tokens = traced.tokens
    write = next(d for d in DEMOS if d.method == "PUT" and d.reason == "allowed")
    deny = next(d for d in DEMOS if d.reason == "category_not_in_purpose")
    answers: list[httpx.Response] = []
    async with traced.client() as client:
        for demo in (write, deny) * 2:  # the second of each: planned
            answers.append(await client.request(
                demo.method, demo.path, content=demo.body, headers={
                    "authorization": f"Bearer {tokens[demo]}",
                    "x-purpose": demo.purpose or "", "content-type": "application/json"}))
    planned: Any = traced.app.middleware_stack
    while not isinstance(planned, GuardMiddleware):
        planned = planned.app
    assert len(planned._planner.seen) == 2  # what the planned path keeps per route, caller,
    assert [a.status_code for a in answers] == [200, 403, 200, 403]  # purpose
    servers = traced.servers()
    assert len(servers) == 4
    ids = [answers[0].headers["x-guard-decision-id"], answers[1].json()["decision_id"],
           answers[2].headers["x-guard-decision-id"], answers[3].json()["decision_id"]]
    assert len(set(ids)) == 4
    for span, decision_id, reason in zip(servers, ids, ["allowed", deny.reason] * 2,
                                         strict=True):
        assert span.attributes is not None
        assert span.attributes["guard.decision_id"] == decision_id
        assert span.attributes["guard.reason"] == reason
