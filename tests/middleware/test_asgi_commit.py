"""The middleware's audit rule with the journal's commit held open.

A read's handler runs while nothing is recorded yet; its decision, with the
response's status, is durable before the response's start reaches the client.
A write's decision is durable before its handler starts. A commit that fails
turns the response into a 403 ``audit_unavailable``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from holdkit import SECRET, Service, entered, service, settle
from tokenkit import Keys, audit_rows

__all__ = ["service"]

pytestmark = pytest.mark.anyio


async def test_a_read_runs_while_nothing_is_recorded_and_starts_only_once_durable(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []
    request = asyncio.create_task(
        service.call("GET", "/customers/c-0001", keys.mint("rsa", sub="svc:crm"), sent))
    await service.handler_ran.wait()  # the handler ran before anything was committed
    await entered(service.journal)  # its decision is being committed ...
    await settle()
    assert sent == []  # ... and nothing of the response has left
    service.journal.release.set()
    await request
    start, *body = sent
    assert (start["status"], start["durable"]) == (200, True)  # durable before it left
    assert b"".join(m.get("body", b"") for m in body) == SECRET
    service.guard.trail.flush()
    decision_id = dict(start["headers"])[b"x-guard-decision-id"].decode()
    [row] = audit_rows(tmp_path / "audit.db", "event_id = ?", (decision_id,))
    assert (row["kind"], row["allowed"], row["action"], row["http_status"]) == (
        "decision", 1, "read", 200)
    assert audit_rows(tmp_path / "audit.db", "kind = 'outcome'") == []  # one event


async def test_a_write_does_not_start_before_its_decision_is_durable(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    sent: list[dict[str, Any]] = []
    request = asyncio.create_task(service.call(
        "PUT", "/customers/c-0001/contact", keys.mint("rsa", sub="svc:crm"), sent))
    await entered(service.journal)  # the decision is being committed ...
    await settle()
    assert service.ran == []  # ... and the handler has not started
    assert sent == []
    service.journal.release.set()
    await request
    assert service.ran == ["write"]
    assert (sent[0]["status"], sent[0]["durable"]) == (200, True)
    service.guard.trail.flush()
    decision_id = dict(sent[0]["headers"])[b"x-guard-decision-id"].decode()
    [row] = audit_rows(tmp_path / "audit.db", "event_id = ?", (decision_id,))
    assert (row["action"], row["http_status"]) == ("write", None)
    outcomes = audit_rows(tmp_path / "audit.db", "decision_ref = ?", (decision_id,))
    assert [(o["kind"], o["http_status"]) for o in outcomes] == [("outcome", 200)]


@pytest.mark.parametrize("method", ["DELETE", "POST"])
async def test_a_read_asked_with_an_unsafe_method_does_not_start_before_it_is_durable(
    service: Service, keys: Keys, method: str
) -> None:
    # The route declares read, but its handler may change state: it runs only once
    # its decision is durable, like a write's.
    sent: list[dict[str, Any]] = []
    request = asyncio.create_task(service.call(
        method, "/customers/c-0001/forget", keys.mint("rsa", sub="svc:crm"), sent))
    await entered(service.journal)
    await settle()
    assert service.ran == []
    assert sent == []
    service.journal.release.set()
    await request
    assert service.ran == ["forget"]
    assert (sent[0]["status"], sent[0]["durable"]) == (200, True)


@pytest.mark.parametrize("method", ["DELETE", "POST"])
async def test_a_read_asked_with_an_unsafe_method_whose_record_fails_never_runs(
    service: Service, keys: Keys, method: str
) -> None:
    service.journal.fail = True
    service.journal.release.set()
    sent: list[dict[str, Any]] = []
    await service.call(method, "/customers/c-0001/forget", keys.mint("rsa", sub="svc:crm"), sent)
    assert service.ran == []  # nothing the trail does not show has happened
    assert sent[0]["status"] == 403
    assert b'"reason":"audit_unavailable"' in b"".join(m.get("body", b"") for m in sent[1:])


async def test_a_read_whose_record_fails_is_replaced_by_audit_unavailable(
    service: Service, keys: Keys
) -> None:
    service.journal.fail = True
    service.journal.release.set()
    sent: list[dict[str, Any]] = []
    await service.call("GET", "/customers/c-0001", keys.mint("rsa", sub="svc:crm"), sent)
    assert service.ran == ["read"]
    start, *body = sent
    assert start["status"] == 403
    assert (b"content-type", b"application/problem+json") in start["headers"]
    assert b"x-guard-decision-id" not in dict(start["headers"])
    text = b"".join(m.get("body", b"") for m in body)
    assert SECRET not in text
    assert b'"reason":"audit_unavailable"' in text
    assert b'"decision_id":null' in text


async def test_a_read_that_raises_before_responding_is_recorded_with_500(
    service: Service, keys: Keys, tmp_path: Path
) -> None:
    service.journal.release.set()
    sent: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError):
        await service.call("GET", "/customers/c-0001/broken", keys.mint("rsa", sub="svc:crm"),
                           sent)
    service.guard.trail.flush()
    rows = audit_rows(tmp_path / "audit.db", "http_route = ?", ("/customers/{customer_id}/broken",))
    assert [(r["kind"], r["allowed"], r["http_status"]) for r in rows] == [("decision", 1, 500)]


async def test_a_message_before_the_start_waits_for_the_decision_too(
    service: Service, keys: Keys
) -> None:
    sent: list[dict[str, Any]] = []
    request = asyncio.create_task(
        service.call("GET", "/customers/c-0001/hinted", keys.mint("rsa", sub="svc:crm"), sent))
    await asyncio.wait_for(service.handler_ran.wait(), 30)  # the app answers ...
    await entered(service.journal)
    await settle()
    assert sent == []  # ... and not even its early hint leaves before the decision is durable
    service.journal.release.set()
    await request
    hint, start, *body = sent
    assert hint["type"] == "http.response.early_hint"
    assert (start["status"], start["durable"]) == (200, True)
    assert b"".join(m.get("body", b"") for m in body) == SECRET
