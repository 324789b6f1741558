"""A proxied write's outcome carries the trace of its own request, whoever hands it over.

Outcomes are queued on the loop and handed to the trail later: by the next request
(``flush_soon``) or by a timer. The trail stamps an outcome with the span current when
it is handed over, so each is handed over in the context of the request it belongs to;
otherwise the next request's trace would be written on the previous request's outcome.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from tokenkit import Keys, audit_rows, guard_settings

from guard._guard import Guard
from guard._types import HttpContext
from middleware.sidecar._outcomes import PendingOutcomes

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_an_outcome_handed_over_by_the_next_request_carries_its_own_trace(
        tmp_path: Path, keys: Keys) -> None:
    guard = Guard.from_settings(guard_settings(tmp_path, keys))
    tracer = TracerProvider().get_tracer("test")
    outcomes = PendingOutcomes(guard)
    http = HttpContext("PUT", "/files/{name}", 201)
    try:
        with tracer.start_as_current_span("the write") as write:
            outcomes.add("d-write", 201, http)
        with tracer.start_as_current_span("the next request") as following:
            outcomes.flush_soon()  # as the next request does, before its own wait
            await asyncio.sleep(0)  # the loop's next turn: the outcome is handed over
        outcomes.flush()
    finally:
        guard.close()
    (row,) = audit_rows(tmp_path / "audit.db", "kind = 'outcome'")
    own, other = write.get_span_context(), following.get_span_context()
    assert row["trace_id"] == format(own.trace_id, "032x")
    assert row["span_id"] == format(own.span_id, "016x")
    assert row["trace_id"] != format(other.trace_id, "032x")
