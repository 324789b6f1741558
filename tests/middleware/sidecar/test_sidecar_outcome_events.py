"""The outcome events of proxied requests say what each client got, field by field.

The sidecar and its upstream are real uvicorn servers on loopback: each proxied write
is followed by one outcome event naming its decision, with the write's method, route
template and the upstream's status (an outcome's HTTP side is shared per method,
route, status and cut-off, so requests that differ only in their path must still get
events of their own with the same content); a read's status is in its decision and no
outcome follows it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread, audit_rows, lifespan, policy_copy, sidecar_settings
from starlette.types import Receive, Scope, Send

from bench._pg import free_port
from middleware.sidecar import create_app

POLICIES = Path(__file__).resolve().parents[3] / "policies"
# What the upstream answers per path: the status and the body.
ANSWERS = {"/files/a.txt": 201, "/files/b.txt": 201, "/files/gone.txt": 410,
           "/files/r.txt": 200}
# The columns of an outcome event that do not identify, time or chain it.
CONTENT = ("kind", "caller", "party_type", "country", "purpose", "categories", "action",
           "allowed", "reason", "rule", "lawful_basis", "policy_version", "subject",
           "http_method", "http_route", "http_status", "trace_id", "span_id", "latency_us",
           "detail")


async def upstream(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": ANSWERS[scope["path"]],
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
def sidecar(tmp_path: Path, keys: Any) -> Iterator[tuple[ServerThread, Path]]:
    policy = policy_copy(tmp_path / "policy", POLICIES)
    with ServerThread(upstream, free_port()) as up:
        settings = sidecar_settings(tmp_path, policy, keys.identity(), upstream=up.url)
        with ServerThread(create_app(settings), free_port()) as served:
            yield served, tmp_path / "audit.db"


def test_each_proxied_write_has_an_outcome_of_its_own(
    sidecar: tuple[ServerThread, Path], keys: Any
) -> None:
    served, db = sidecar
    auth = {"authorization": f"Bearer {keys.mint(sub='svc:web')}",
            "x-purpose": "customer.registration"}
    for path in ("/files/a.txt", "/files/b.txt", "/files/a.txt", "/files/gone.txt"):
        assert httpx.put(served.url + path, content=b"x", headers=auth,
                         timeout=30).status_code == ANSWERS[path]
    crm = {"authorization": f"Bearer {keys.mint(sub='svc:crm')}",
           "x-purpose": "relationship.management"}
    assert httpx.get(served.url + "/files/r.txt", headers=crm, timeout=30).status_code == 200
    served.server.should_exit = True  # the lifespan's end hands over what is still queued
    served.thread.join(timeout=15)
    decisions = audit_rows(db, "kind = 'decision' AND http_route = ?", ("/files/{name}",))
    outcomes = audit_rows(db, "kind = 'outcome'")
    writes = [d for d in decisions if d["action"] == "write"]
    assert len(writes) == 4
    assert [o["decision_ref"] for o in outcomes] == [d["event_id"] for d in writes]
    expected = {"kind": "outcome", "caller": "", "party_type": None, "country": None,
                "purpose": "", "categories": "[]", "action": "", "allowed": None,
                "reason": "", "rule": "[]", "lawful_basis": "[]", "policy_version": "",
                "subject": None, "http_method": "PUT", "http_route": "/files/{name}",
                "trace_id": None, "span_id": None, "latency_us": None, "detail": None}
    assert [{k: o[k] for k in CONTENT} for o in outcomes] == [
        {**expected, "http_status": status} for status in (201, 201, 201, 410)]
    assert len(outcomes) == len({o["event_id"] for o in outcomes})
    [read] = [d for d in decisions if d["action"] == "read"]
    assert read["http_status"] == 200
