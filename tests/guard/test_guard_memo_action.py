"""``Guard.decide``'s memo answers a request as a fresh guard would, whatever its action's type.

``Action`` is a ``str`` enum: the plain string ``"read"`` is equal to ``Action.READ``
and hashes alike, so a memo keyed by the action took one for the other. A request
with a plain-string action cannot be judged (the engine reads ``action.value``): a
fresh guard refuses it ``internal_error`` and records nothing, and so must a guard
whose memo holds its well-typed twin; the twin, in turn, is never answered from a
memo entry the plain string made. Over random requests on the shipped policy, each
asked in both forms in a random order, every ruling of a guard that remembers is the
one a fresh guard gives, and every well-typed decision is casbin's own Enforcer's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import casbin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._guard import Asked, Guard, Ruling
from guard._types import Action, HttpContext, Reason, Request
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from guard.rights import Register
from tests.guard.audit.conftest import keys_at, make_trail

KEY = b"m" * 32
SHIPPED = Path(__file__).resolve().parents[2] / "policies"
POLICY = load_policy(SHIPPED)
ENFORCER = casbin.Enforcer(str(SHIPPED / "model.conf"), str(SHIPPED / "rules.csv"))
HTTP = HttpContext("GET", "/customers/{customer_id}")
# Every granted (caller, purpose, category): requests near a grant are mostly allowed.
GRANTED = sorted((caller, purpose, granted) for (caller, purpose), grants in POLICY.grants.items()
                 for granted, _action in grants)
CALLERS = [*sorted(POLICY.parties), "svc:ghost"]
PURPOSES = sorted(POLICY.purposes)
CATEGORIES = sorted(POLICY.categories)

near_grant = st.builds(lambda grant: (grant[0], grant[1], (grant[2],)), st.sampled_from(GRANTED))
anywhere = st.tuples(st.sampled_from(CALLERS), st.sampled_from(PURPOSES),
                     st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=2).map(tuple))
# (caller, purpose, categories), the action, the form asked first, per category or not
asks = st.tuples(st.one_of(near_grant, near_grant, anywhere), st.sampled_from(list(Action)),
                 st.booleans(), st.booleans())


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Guard, Any]]:
    tmp = tmp_path_factory.mktemp("memo-action")
    trail = make_trail(f"sqlite:///{tmp / 'audit.db'}", keys_at(tmp / "sign.key"),
                       hmac_key=KEY, journal=tmp / "audit.db.journal")
    guard = Guard(PolicyHolder(lambda: POLICY), trail, hmac_key=KEY, register=Register(KEY))
    yield guard, trail
    guard.close()


def _fresh(guard: Guard, trail: Any) -> Guard:
    """A guard with nothing remembered, on the same policy, register and trail."""
    return Guard(guard.holder, trail, hmac_key=KEY, register=guard.register)


def _decided(guard: Guard, request: Request, per_category: bool, asked: bool) -> Ruling:
    if asked and not per_category:
        return guard.decide_asked(Asked(request, HTTP))
    return guard.decide(request, HTTP, per_category=per_category)


def _seen(ruling: Ruling) -> tuple[Any, ...]:
    fields = None if ruling.fields is None else {
        k: v for k, v in ruling.fields.items() if k != "latency_us"}
    return ruling.decision, fields


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(asks, min_size=1, max_size=8), st.booleans())
def test_a_ruling_does_not_depend_on_the_memo(
    world: tuple[Guard, Any], asked: list[tuple[tuple[str, str, tuple[str, ...]], Action, bool,
                                               bool]],
    through_asked: bool,
) -> None:
    guard, trail = world
    for (caller, purpose, categories), action, plain_first, per_category in asked:
        typed = Request(caller, purpose, categories, action)
        plain = Request(caller, purpose, categories, action.value)  # type: ignore[arg-type]
        for request in (plain, typed) if plain_first else (typed, plain):
            ruling = _decided(guard, request, per_category, through_asked)
            assert _seen(ruling) == _seen(_decided(_fresh(guard, trail), request, per_category,
                                                   through_asked)), request
            if request is plain:
                assert ruling.decision.reason is Reason.INTERNAL_ERROR, request
                assert not ruling.decision.allowed
            elif not per_category:  # casbin judges the whole request (per category: any)
                expected = all(ENFORCER.enforce(caller, purpose, category, action.value)
                               for category in categories)
                assert ruling.decision.allowed == expected, request


def test_the_memo_never_answers_a_plain_string_with_its_twin(
    world: tuple[Guard, Any],
) -> None:
    guard, _ = world
    typed = Request("svc:crm", "relationship.management", ("contact",), Action.READ)
    plain = Request("svc:crm", "relationship.management", ("contact",), "read")  # type: ignore[arg-type]
    for per_category in (False, True):
        assert guard.decide(typed, HTTP, per_category=per_category).decision.allowed
        refused = guard.decide(plain, HTTP, per_category=per_category)
        assert refused.decision.reason is Reason.INTERNAL_ERROR
        assert guard.decide(typed, HTTP, per_category=per_category).decision.allowed
