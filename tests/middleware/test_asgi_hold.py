"""A read's response is held while its decision is committed, without holding the app.

The decision is queued when the response starts; a whole small body is held with
the start, the app's call returns (its objects are freed) and the response leaves
once the decision is durable. A background task after the body does not delay the
answer; a stream, a large body or a file waits where it is sent. Nothing of a read
leaves before its decision is durable, in every shape.
"""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest
from holdkit import SECRET, Service, entered, service, settle
from tokenkit import Keys, audit_rows

__all__ = ["service"]

pytestmark = pytest.mark.anyio


def _body(sent: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def _decision_id(start: dict[str, Any]) -> str:
    return str(dict(start["headers"])[b"x-guard-decision-id"].decode())


async def _begin(service: Service, keys: Keys, path: str, sent: list[dict[str, Any]]
                 ) -> asyncio.Task[None]:
    """Start a read of ``path`` and wait until its decision is in the (held) journal."""
    request = asyncio.create_task(
        service.call("GET", path, keys.mint("rsa", sub="svc:crm"), sent))
    await entered(service.journal)
    await settle()
    return request


async def test_a_whole_body_is_held_while_the_app_returns_and_its_objects_are_freed(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []
    request = await _begin(service, keys, "/customers/c-0001", sent)
    assert sent == []  # nothing leaves before the decision is durable ...
    gc.collect()
    [response] = service.responses
    assert response() is None  # ... and the app's call is over: its response object is gone
    service.journal.release.set()
    await request
    start, body = sent
    assert (start["status"], start["durable"]) == (200, True)
    assert body == {"type": "http.response.body", "body": SECRET}
    service.guard.trail.flush()
    rows = audit_rows(tmp_path / "audit.db", "event_id = ?", (_decision_id(start),))
    assert [(r["kind"], r["http_status"]) for r in rows] == [("decision", 200)]
    assert audit_rows(tmp_path / "audit.db", "kind = 'outcome'") == []


async def test_a_background_task_does_not_delay_the_answer(
    service: Service, keys: Keys
) -> None:
    sent: list[dict[str, Any]] = []
    request = await _begin(service, keys, "/customers/c-0001/background", sent)
    await asyncio.wait_for(service.background_started.wait(), 30)
    assert sent == []  # the app went on to its background task; nothing left yet
    service.journal.release.set()
    for _ in range(3000):  # the answer goes out once durable, the task still running
        if len(sent) == 2:
            break
        await asyncio.sleep(0.01)
    start, body = sent
    assert (start["status"], start["durable"]) == (200, True)
    assert body["body"] == SECRET
    assert not service.background_done
    assert not request.done()
    service.background_release.set()
    await request
    assert service.background_done
    assert len(sent) == 2


async def test_a_refusal_does_not_wait_for_a_background_task(
    service: Service, keys: Keys
) -> None:
    sent: list[dict[str, Any]] = []
    request = await _begin(service, keys, "/customers/c-0001/background", sent)
    await asyncio.wait_for(service.background_started.wait(), 30)
    service.journal.fail = True
    service.journal.release.set()
    for _ in range(3000):
        if len(sent) == 2:
            break
        await asyncio.sleep(0.01)
    assert sent[0]["status"] == 403
    assert SECRET not in _body(sent)
    assert b'"reason":"audit_unavailable"' in _body(sent)
    assert not request.done()  # the background task still runs
    service.background_release.set()
    await request


async def test_a_background_task_that_fails_after_the_body_still_gets_the_answer_out(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []
    request = await _begin(service, keys, "/customers/c-0001/failing", sent)
    assert service.background_started.is_set()  # failed before the decision was durable
    assert sent == []
    service.journal.release.set()
    with pytest.raises(RuntimeError, match="background task failed"):
        await request  # the server logs it, as without the guard ...
    start, body = sent  # ... and the client has its whole answer
    assert (start["status"], start["durable"]) == (200, True)
    assert body["body"] == SECRET
    service.guard.trail.flush()
    decision_id = _decision_id(start)
    [row] = audit_rows(tmp_path / "audit.db", "event_id = ?", (decision_id,))
    assert row["http_status"] == 200
    assert audit_rows(tmp_path / "audit.db", "decision_ref = ?", (decision_id,)) == []


@pytest.mark.parametrize("path", ["/customers/c-0001/large", "/customers/c-0001/stream",
                                  "/customers/c-0001/file"])
async def test_a_stream_a_large_body_or_a_file_waits_where_it_is_sent(
    service: Service, keys: Keys, path: str
) -> None:
    sent: list[dict[str, Any]] = []
    request = await _begin(service, keys, path, sent)
    assert sent == []
    if path.endswith("/file"):
        assert not service.handler_ran.is_set()  # still inside its send of the file
    service.journal.release.set()
    await request
    start, *rest = sent
    assert (start["status"], start["durable"]) == (200, True)
    if path.endswith("/file"):
        assert rest == [{"type": "http.response.pathsend", "path": "/srv/customers/c-0001"}]
    else:
        assert _body(sent).startswith(SECRET)
        assert rest[-1].get("more_body", False) is False


async def test_an_app_that_fails_after_its_start_sends_nothing_and_is_recorded_500(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []
    request = await _begin(service, keys, "/customers/c-0001/start-only", sent)
    service.journal.release.set()
    with pytest.raises(RuntimeError, match="after the start"):
        await request
    start, _body_sent = sent  # the held start never left: Starlette's error handler answers
    assert start["status"] == 500
    assert b"x-guard-decision-id" not in dict(start["headers"])
    service.guard.trail.flush()
    [decision] = audit_rows(tmp_path / "audit.db", "http_route = ? AND kind = 'decision'",
                            ("/customers/{customer_id}/start-only",))
    assert decision["http_status"] == 200  # committed when the response started ...
    outcomes = audit_rows(tmp_path / "audit.db", "decision_ref = ?", (decision["event_id"],))
    assert [(o["http_status"], o["detail"]) for o in outcomes] == [(500, None)]  # ... then 500


async def test_a_client_gone_while_the_commit_is_in_flight_gets_nothing_and_is_recorded_aborted(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    token = keys.mint("rsa", sub="svc:crm")
    sent: list[dict[str, Any]] = []
    gone = False
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/customers/c-0001",
             "raw_path": b"/customers/c-0001", "root_path": "", "query_string": b"",
             "client": ("127.0.0.1", 5000), "server": ("svc", 80),
             "headers": [(b"authorization", f"Bearer {token}".encode()),
                         (b"x-purpose", b"relationship.management")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if gone:  # as a server's transport, closed by the client
            raise OSError("the client went away")
        sent.append(message)

    request = asyncio.create_task(service.app(scope, receive, send))
    await entered(service.journal)
    await settle()
    assert sent == []
    gone = True  # the client leaves while its decision is committed
    service.journal.release.set()
    with pytest.raises(OSError, match="went away"):
        await request  # the server hears of it, as without the guard
    assert sent == []
    service.guard.trail.flush()
    [decision] = audit_rows(tmp_path / "audit.db", "kind = 'decision'")
    assert (decision["allowed"], decision["http_status"]) == (1, 200)
    [outcome] = audit_rows(tmp_path / "audit.db", "kind = 'outcome'")
    assert outcome["decision_ref"] == decision["event_id"]
    assert (outcome["http_status"], outcome["detail"]) == (200, "aborted")
