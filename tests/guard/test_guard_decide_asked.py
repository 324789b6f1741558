"""``Guard.decide_asked`` keeps a request's decision with it: never one of another policy.

A request asked again and again (the planner keeps an :class:`Asked` per route,
caller and purpose) keeps its decision for the policy it was made under. Over random
policies put in force one after another (and back again), each request asked through
the same ``Asked`` every time gets exactly what casbin's own Enforcer answers under
the policy in force, and the same ruling as ``Guard.decide``; a register entry made
after a decision was kept applies to the very next request.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import casbin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._guard import Asked, Guard
from guard._types import Action, HttpContext, Reason, Request
from guard.policy import CompiledPolicy, PolicySource, compile_source, load_policy
from guard.policy._holder import PolicyHolder
from guard.rights import EntryKind, Record, Register
from tests.guard.audit.conftest import keys_at, make_trail
from tests.guard.test_differential import MODEL, Generated, anywhere, near_grant, policies

KEY = b"a" * 32
SHIPPED = load_policy(Path(__file__).resolve().parents[2] / "policies")
HTTP = HttpContext("GET", "/customers/{customer_id}")


class _Cell:
    """The policy a holder loads: the one the test put in force last."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy

    def __call__(self) -> CompiledPolicy:
        return self.policy


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Guard, _Cell]]:
    tmp = tmp_path_factory.mktemp("decide-asked")
    trail = make_trail(f"sqlite:///{tmp / 'audit.db'}", keys_at(tmp / "sign.key"),
                       hmac_key=KEY, journal=tmp / "audit.db.journal")
    cell = _Cell(SHIPPED)
    guard = Guard(PolicyHolder(cell), trail, hmac_key=KEY, register=Register(KEY))
    yield guard, cell
    guard.close()


def _enforcer(rules: str) -> casbin.Enforcer:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.csv"
        path.write_text(rules)
        return casbin.Enforcer(str(MODEL), str(path))


def _without_timing(fields: dict[str, Any] | None) -> dict[str, Any]:
    assert fields is not None
    return {k: v for k, v in fields.items() if k != "latency_us"}


@st.composite
def sequences(draw: st.DrawFn) -> tuple[list[Generated], list[int], list[Request]]:
    """Two random policies, the order they are put in force (back and forth), and requests
    over the names of both."""
    gens = [draw(policies()), draw(policies())]
    order = draw(st.lists(st.sampled_from([0, 1]), min_size=2, max_size=5))
    kinds = [near_grant(g) for g in gens if g.grants] + [anywhere(g) for g in gens]
    requests = [draw(st.one_of(kinds)) for _ in range(draw(st.integers(2, 8)))]
    return gens, order, requests


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(sequences())
def test_a_kept_decision_is_casbins_under_the_policy_in_force(
    world: tuple[Guard, _Cell], case: tuple[list[Generated], list[int], list[Request]]
) -> None:
    guard, cell = world
    gens, order, requests = case
    compiled = [compile_source(PolicySource(MODEL.read_text(), g.rules, str(MODEL), "rules.csv"))
                for g in gens]
    enforcers = [_enforcer(g.rules) for g in gens]
    asked = [Asked(request, HTTP) for request in requests]  # kept across every reload
    try:
        for index in order:
            cell.policy = compiled[index]
            guard.holder.reload()
            for _ in range(2):  # the second time from what the request keeps
                for request, kept in zip(requests, asked, strict=True):
                    ruling = guard.decide_asked(kept)
                    expected = all(enforcers[index].enforce(request.caller, request.purpose,
                                                            cat, request.action.value)
                                   for cat in request.categories)
                    assert ruling.decision.allowed == expected, (request, gens[index].rules)
                    afresh = guard.decide(request, HTTP)
                    assert ruling.decision == afresh.decision
                    assert _without_timing(ruling.fields) == _without_timing(afresh.fields)
                    assert ruling.decision.policy_version == compiled[index].version
    finally:
        cell.policy = SHIPPED
        guard.holder.reload()


def test_a_register_entry_applies_to_the_next_request(world: tuple[Guard, _Cell]) -> None:
    guard, _ = world
    subject = "cust-asked-then-restricted"
    kept = Asked(Request("svc:crm", "relationship.management", ("contact",), Action.READ,
                         subject), HTTP)
    assert guard.decide_asked(kept).decision.allowed
    assert guard.decide_asked(kept).decision.allowed  # from what it keeps
    register = guard.register
    assert register is not None
    register.apply(register.pseudonym(subject), [
        Record(EntryKind.RESTRICTION, "", date(2020, 1, 1))])
    refused = guard.decide_asked(kept)
    assert not refused.decision.allowed
    assert refused.decision.reason is Reason.PROCESSING_RESTRICTED
    assert refused.fields is not None
    assert refused.fields["subject_id"] == subject


def test_each_ruling_gets_fields_of_its_own(world: tuple[Guard, _Cell]) -> None:
    guard, _ = world
    kept = Asked(Request("svc:crm", "relationship.management", ("contact",), Action.READ,
                         "cust-1"), HTTP)
    first, second = guard.decide_asked(kept), guard.decide_asked(kept)
    assert first.fields is not None
    assert second.fields is not None
    assert first.fields is not second.fields
    first.fields["http_status"] = 200  # as a commit stamps it
    assert second.fields["http_status"] is None
    assert guard.decide_asked(kept).fields["http_status"] is None  # type: ignore[index]


def test_an_engine_error_is_a_denial_and_not_kept(world: tuple[Guard, _Cell]) -> None:
    guard, _ = world
    odd = Asked(Request("svc:crm", "relationship.management", ("contact",), "read"),  # type: ignore[arg-type]
                HTTP)
    for _ in range(2):
        ruling = guard.decide_asked(odd)
        assert not ruling.decision.allowed
        assert ruling.decision.reason is Reason.INTERNAL_ERROR
    assert odd.decided is None
