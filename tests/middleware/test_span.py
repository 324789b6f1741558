"""``middleware._span``: the current span read in one look-up is the API's own answer."""

from __future__ import annotations

import asyncio

from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import INVALID_SPAN, NonRecordingSpan, SpanContext

from middleware import _span


def _both() -> tuple[object, object, object]:
    direct = _span.CONTEXT.get().get(_span.SPAN_KEY) if _span.CONTEXT is not None else None
    if not isinstance(direct, trace.Span):
        direct = INVALID_SPAN
    return _span.current_span(), direct, trace.get_current_span()


def test_the_default_runtime_context_is_read_directly() -> None:
    assert _span.CONTEXT is not None  # the pinned API's contextvars runtime context


def test_the_same_span_as_the_api_in_every_context() -> None:
    first, second, api = _both()
    assert first is second is api is INVALID_SPAN  # no span
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("server") as server:
        assert _both() == (server, server, server)
        with tracer.start_as_current_span("child") as child:
            assert _both() == (child, child, child)
        assert _both() == (server, server, server)
    remote = NonRecordingSpan(SpanContext(1, 2, is_remote=True))
    with trace.use_span(remote):
        assert _both() == (remote, remote, remote)
    token = context.attach(context.set_value(_span.SPAN_KEY, "not a span"))
    try:
        assert _both() == (INVALID_SPAN, INVALID_SPAN, INVALID_SPAN)
    finally:
        context.detach(token)
    assert _both()[0] is INVALID_SPAN


def test_a_task_sees_the_span_it_was_started_in() -> None:
    tracer = TracerProvider().get_tracer("test")

    async def look() -> tuple[object, object, object]:
        return _both()

    async def run() -> None:
        with tracer.start_as_current_span("server") as server:
            seen = await asyncio.create_task(look())
            assert seen == (server, server, server)

    asyncio.run(run())
