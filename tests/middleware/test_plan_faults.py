"""A planner fault is counted and logged; the request is answered as ``enforce()`` answers it.

Two guarded copies of the example service are served by uvicorn on loopback with
one real guard (journal and SQLite store): in one, the planner fails on every
request it gets as far as the caller's identity (its authenticator raises there);
the other has no planned path at all, so ``enforce()`` judges every request. The
same requests, each three times (the plan takes a route and a token from their
second request on), get the same answers from both and the same audit events, and
only the failing planner's faults are counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tokenkit import Keys, UvicornThread, audit_rows, guard_settings

from examples.customers import create_app
from guard._guard import Guard
from guard.config import Settings
from middleware import GuardMiddleware
from middleware.identity import Authenticator, Caller

_VOLATILE = ("date", "x-guard-decision-id", "content-length")
"""Response headers that differ between two answers to one request (the event id)."""
_COMPARED = ("kind", "allowed", "reason", "action", "categories", "caller", "purpose",
             "http_method", "http_route", "http_status", "rule", "lawful_basis", "detail")
"""The audit columns the two answers' events must agree on."""


class _FailingAuth:
    """An authenticator whose look-up of a known caller fails (the planner's fault)."""

    keys_set = 1

    def __init__(self, auth: Authenticator) -> None:
        self._auth = auth

    def known(self, authorization: object, headers: object) -> tuple[Caller, float, float]:
        raise RuntimeError("the planner's look-up failed")


class _NoPlan:
    """No planned path: every request is judged by ``enforce()``."""

    routes: object = None
    faults = 0

    def judge(self, *_: object) -> None:
        return None


@pytest.fixture
def served(tmp_path: Path, keys: Keys) -> Iterator[dict[str, Any]]:
    settings: Settings = guard_settings(tmp_path, keys)
    with Guard.from_settings(settings) as guard:
        auth = Authenticator.from_settings(settings.identity, announce=False)
        failing = GuardMiddleware(create_app(settings, enforce=False), guard=guard,
                                  settings=settings, authenticator=auth)
        failing._planner.auth = _FailingAuth(auth)  # type: ignore[assignment]
        interpreted = GuardMiddleware(create_app(settings, enforce=False), guard=guard,
                                      settings=settings, authenticator=auth)
        interpreted._planner = _NoPlan()  # type: ignore[assignment]
        with UvicornThread(failing) as a, UvicornThread(interpreted) as b:
            yield {"failing": failing, "interpreted": interpreted, "urls": (a.url, b.url),
                   "db": tmp_path / "audit.db", "guard": guard}


def _answer(response: httpx.Response) -> tuple[int, dict[str, str], object]:
    headers = {k: v for k, v in response.headers.items() if k not in _VOLATILE}
    body: object = response.content
    if response.headers.get("content-type", "").startswith(("application/json",
                                                             "application/problem+json")):
        body = json.loads(response.content)
        if isinstance(body, dict):
            body.pop("decision_id", None)
    return response.status_code, headers, body


def _event(db: Path, response: httpx.Response) -> dict[str, Any]:
    decision_id = response.headers["x-guard-decision-id"]
    [row] = audit_rows(db, "event_id = ?", (decision_id,))
    return {name: row.get(name) for name in _COMPARED}


def test_a_planner_fault_is_counted_and_the_request_answered_as_enforce_answers(
    served: dict[str, Any], keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    crm = {"authorization": f"Bearer {keys.mint('rsa', sub='svc:crm')}",
           "x-purpose": "relationship.management"}
    marketing = {"authorization": f"Bearer {keys.mint('ec', sub='svc:marketing')}",
                 "x-purpose": "marketing.advertising"}
    requests = [
        ("GET", "/customers/c-0001", crm, None),  # an allowed read
        ("GET", "/customers/c-0002/record", crm, None),  # a minimised read
        ("GET", "/customers/c-0003/payment", marketing, None),  # a denial
        ("PUT", "/customers/c-0004/contact", crm, {"email": "a@example.com"}),  # a write
    ]
    caplog.set_level(logging.DEBUG, logger="guard.middleware")
    failing_url, interpreted_url = served["urls"]
    answers: dict[str, list[httpx.Response]] = {failing_url: [], interpreted_url: []}
    with httpx.Client(timeout=30) as client:
        for method, path, headers, body in requests:
            for _ in range(3):  # the plan takes the route at once, the token from its second
                for url in (failing_url, interpreted_url):
                    answers[url].append(client.request(method, url + path, headers=headers,
                                                       json=body))
    served["guard"].trail.flush()
    for failed, interpreted in zip(answers[failing_url], answers[interpreted_url], strict=True):
        assert _answer(failed) == _answer(interpreted)
        assert _event(served["db"], failed) == _event(served["db"], interpreted)
    statuses = [r.status_code for r in answers[failing_url]]
    assert statuses == [200] * 6 + [403] * 3 + [200] * 3
    failing: GuardMiddleware = served["failing"]
    assert failing.planner_faults == 3 * len(requests)  # every request: a route is planned
    # from its first (the failing look-up of its token is the fault)
    assert served["interpreted"].planner_faults == 0
    lines = [r.getMessage() for r in caplog.records
             if r.name == "guard.middleware" and r.levelno == logging.DEBUG]
    assert len(lines) == failing.planner_faults
    assert all("RuntimeError" in line and "test_plan_faults.py" in line for line in lines)
    assert not any("the planner's look-up failed" in line for line in lines)  # no message
