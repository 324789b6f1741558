"""Review of the held read response: the trail tells the status the client actually got.

A read's whole small response is held until its decision is durable and sent
when the app returns. When the server fails to send it (uvicorn refuses a
header value holding a line break and drops the connection), the decision says
200 and the client got nothing: an outcome event must say the answer was cut
short (``aborted``), as it does for a response that breaks off mid-body.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import poll
from starlette.applications import Starlette
from starlette.routing import Route
from tokenkit import Keys, UvicornThread, audit_rows, guard_settings

from guard._guard import Guard
from middleware import GuardMiddleware, RouteTable, guarded

READ = {"categories": ["contact"], "action": "read", "subject": "customer_id"}


UNSENDABLE = {
    "line break": [(b"x-note", b"one\r\nset-cookie: two")],  # uvicorn refuses it
    "no pair": [b"x-note: one"],  # not a (name, value) pair: the guard cannot read it
}


class _Unsendable:
    """A raw ASGI endpoint whose whole response carries a header that cannot be sent."""

    def __init__(self, headers: list[Any]) -> None:
        self.headers = headers

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": b"the customer's phone number"})


@pytest.fixture(params=list(UNSENDABLE))
def server(keys: Keys, tmp_path: Path, request: pytest.FixtureRequest
           ) -> Iterator[tuple[str, Path, Guard]]:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    endpoint = _Unsendable(UNSENDABLE[request.param])
    app = Starlette(routes=[Route("/customers/{customer_id}", guarded(**READ)(endpoint))])
    app.add_middleware(GuardMiddleware, guard=guard, settings=settings, routes=RouteTable(()))
    try:
        with UvicornThread(app) as running:
            yield running.url, tmp_path / "audit.db", guard
    finally:
        guard.close()


def test_a_held_response_the_server_cannot_send_is_recorded_as_aborted(
    server: tuple[str, Path, Guard], keys: Keys
) -> None:
    url, db, guard = server
    try:
        answer = httpx.get(url + "/customers/c-0001", timeout=10, headers={
            "authorization": f"Bearer {keys.mint('hs', sub='svc:crm')}",
            "x-purpose": "relationship.management"})
    except httpx.RemoteProtocolError:  # the server dropped the connection
        pass
    else:  # the guard failed before anything went out: the server answered 500 itself
        assert answer.status_code == 500
        assert b"phone" not in answer.content
    guard.trail.flush()  # the outcome is queued as the connection drops: durable, then read
    decision = audit_rows(db, "kind = 'decision'")[-1]
    assert (decision["allowed"], decision["http_status"]) == (1, 200)
    # the server records the outcome after it dropped the connection, so it may
    # reach the trail a moment after the client saw the drop
    outcomes = poll(lambda: audit_rows(db, "decision_ref = ?", (decision["event_id"],)))
    assert [(o["kind"], o["http_status"], o["detail"]) for o in outcomes] == [
        ("outcome", 200, "aborted")]
