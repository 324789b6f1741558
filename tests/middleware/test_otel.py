"""Decision attributes land on the server span of opentelemetry-instrumentation-fastapi."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tokenkit import Keys, guard_settings

from examples.customers import DEMOS, create_app, mint_tokens
from guard._guard import Guard

instrumentation = pytest.importorskip(
    "opentelemetry.instrumentation.fastapi",
    reason="pip install opentelemetry-instrumentation-fastapi==0.66b2",
)
pytestmark = pytest.mark.anyio


async def test_server_span_carries_the_decision(keys: Keys, tmp_path: Path) -> None:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, guard=guard)
    instrumentation.FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    tokens = mint_tokens(settings)
    allow = DEMOS[0]
    deny = next(d for d in DEMOS if d.reason == "category_not_in_purpose")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://svc") as client:
            ok = await client.get(allow.path, headers={
                "authorization": f"Bearer {tokens[allow]}", "x-purpose": allow.purpose or ""})
            no = await client.get(deny.path, headers={
                "authorization": f"Bearer {tokens[deny]}", "x-purpose": deny.purpose or ""})
    finally:
        instrumentation.FastAPIInstrumentor.uninstrument_app(app)
        guard.close()
    assert ok.status_code == 200
    assert no.status_code == 403
    assert no.json()["reason"] == "category_not_in_purpose"
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
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
