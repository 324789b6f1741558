"""The planner's kept requests (each with the guard's ``Asked`` decision memo) are bounded.

Up to :data:`middleware._plan.CALLERS` entries per route answer and purpose value; at
:data:`middleware._plan.REQUESTS` entries all are forgotten at once, so the decisions kept
with them are too.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from guard._guard import Asked
from guard._types import Action, HttpContext
from middleware import _plan
from middleware._plan import Planner
from middleware.identity import Caller


class _Plan:
    """What ``Planner._seen`` reads of a route's plan."""

    categories = ("contact",)
    action = Action.READ
    http = HttpContext("GET", "/customers/{customer_id}")


class _Answer:
    """What ``Planner._seen`` reads of a route answer (hashable by identity, as one is)."""

    subject = "c-1"


def test_the_requests_kept_and_their_decisions_are_bounded(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(_plan, "REQUESTS", 8)
    planner = Planner(SimpleNamespace(), SimpleNamespace(), "x-purpose")  # type: ignore[arg-type]
    plan: Any = _Plan()
    answer: Any = _Answer()
    for n in range(50):
        caller = Caller(f"svc:{n}", None, "jwt")
        hit = (caller, 0.0, 1e12)
        entry = planner._seen(answer, plan, "relationship.management", f"Bearer {n}".encode(),
                              f"purpose.{n}".encode(), hit, 1)
        assert entry.caller is caller
        assert entry.hit is hit
        assert isinstance(entry.asked, Asked)
        assert entry.asked.request.caller == f"svc:{n}"
        assert entry.asked.http is plan.http
        assert 0 < sum(len(entries) for entries in planner.seen.values()) == planner.kept <= 8
    assert planner.asking is None  # a guard without decide_asked: decide() is asked
