"""``Guard.decide`` remembers decisions per policy: the same answers and events as deciding afresh.

The remembered path is compared with the engine asked every time (``decide`` with
the register) on random requests over the shipped policy, with subjects that have
register entries and subjects that have none; a reload and a new register entry
apply to the very next request, so a remembered allow is never stale.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._guard import Guard
from guard._types import Action, HttpContext, Reason, Request
from guard.audit._event import decision_fields
from guard.engine import decide
from guard.policy import CompiledPolicy, load_policy
from guard.policy._holder import PolicyHolder
from guard.rights import EntryKind, Record, Register
from tests.guard.audit.conftest import keys_at, make_trail

KEY = b"c" * 32
SHIPPED = Path(__file__).resolve().parents[2] / "policies"
POLICY = load_policy(SHIPPED)
ALLOWED = Request("svc:crm", "relationship.management", ("contact",), subject="cust-1")
# Subjects with register entries (every kind that can refuse or allow), and ones with none.
ENTRIES = {
    "s-objected": [Record(EntryKind.OBJECTION, "relationship.management", date(2020, 1, 1))],
    "s-restricted": [Record(EntryKind.RESTRICTION, "", date(2020, 1, 1))],
    "s-erased": [Record(EntryKind.ERASURE_REQUESTED, "", date(2020, 1, 1))],
    "s-ended": [Record(EntryKind.END_OF_RELATIONSHIP, "", date(2000, 1, 1))],
    "s-consented": [Record(EntryKind.CONSENT_GRANTED, p, date(2020, 1, 1))
                    for p in sorted(POLICY.purposes)],
    "s-withdrawn": [Record(EntryKind.CONSENT_GRANTED, p, date(2020, 1, 1))
                    for p in sorted(POLICY.purposes)]
                   + [Record(EntryKind.CONSENT_WITHDRAWN, p, date(2020, 2, 1))
                      for p in sorted(POLICY.purposes)],
}
SUBJECTS = [None, "cust-1", "cust-2", *ENTRIES]
CALLERS = [*sorted(POLICY.parties), "svc:ghost"]
PURPOSES = [*sorted(POLICY.purposes), "no.such.purpose"]
CATEGORIES = [*sorted(POLICY.categories), "loyalty"]
HTTP = [None, HttpContext("GET", "/customers/{customer_id}"),
        HttpContext("PUT", "/customers/{customer_id}/contact", 204)]


def _register() -> Register:
    register = Register(KEY)
    for subject, records in ENTRIES.items():
        register.apply(register.pseudonym(subject), records)
    return register


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    tmp = tmp_path_factory.mktemp("decide-cache")
    trail = make_trail(f"sqlite:///{tmp / 'audit.db'}", keys_at(tmp / "sign.key"),
                       hmac_key=KEY, journal=tmp / "audit.db.journal")
    g = Guard(PolicyHolder(lambda: POLICY), trail, hmac_key=KEY, register=_register())
    yield g
    g.close()


def _expected(policy: CompiledPolicy, register: Register | None, request: Request,
              http: HttpContext | None) -> tuple[Any, dict[str, Any]]:
    """The decision and event fields the engine gives when asked afresh (no span: no ids)."""
    decision = decide(policy, request, register)
    fields = {**decision_fields(request, decision, http), "trace_id": None, "span_id": None}
    return decision, _without_timing(fields)


def _without_timing(fields: dict[str, Any] | None) -> dict[str, Any]:
    assert fields is not None
    return {k: v for k, v in fields.items() if k != "latency_us"}


# Every granted (caller, purpose, category or a category under it, action) of the policy:
# requests near a grant reach the register checks; random ones mostly stop earlier.
GRANTED = sorted(
    (caller, purpose, category, Action(action))
    for (caller, purpose), grants in POLICY.grants.items()
    for (granted, action) in grants
    for category in CATEGORIES if category == granted or category.startswith(granted + ".")
)
anywhere = st.builds(
    Request,
    st.sampled_from(CALLERS),
    st.sampled_from(PURPOSES),
    st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=3).map(tuple),
    st.sampled_from(list(Action)),
    st.sampled_from(SUBJECTS),
)
near_grant = st.builds(
    lambda grant, subject: Request(grant[0], grant[1], (grant[2],), grant[3], subject),
    st.sampled_from(GRANTED),
    st.sampled_from(SUBJECTS),
)
requests = st.one_of(near_grant, near_grant, anywhere)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(requests, st.sampled_from(HTTP)), min_size=1, max_size=12))
def test_a_remembered_decision_is_the_one_decided_afresh(
    guard: Guard, asked: list[tuple[Request, HttpContext | None]]
) -> None:
    for request, http in [*asked, *asked]:  # each asked twice: remembered the second time
        ruling = guard.decide(request, http)
        decision, fields = _expected(guard.holder.current, guard.register, request, http)
        assert ruling.decision == decision, request
        assert _without_timing(ruling.fields) == fields, request
        assert ruling.fields is not None
        assert isinstance(ruling.fields["latency_us"], int)


def test_the_generator_reaches_allows_and_register_refusals() -> None:
    """The property above is only meaningful if it meets both kinds of answer."""
    register = _register()
    reasons = {decide(POLICY, Request(c, p, (k,), a, s), register).reason
               for c, p, k, a in GRANTED for s in SUBJECTS}
    assert Reason.ALLOWED in reasons
    assert Reason.PROCESSING_RESTRICTED in reasons


def test_each_event_gets_its_own_fields(guard: Guard) -> None:
    http = HttpContext("GET", "/customers/{customer_id}")
    first = guard.decide(ALLOWED, http)
    second = guard.decide(Request(*ALLOWED.__getstate__()[:4], "cust-2"), http)
    assert first.fields is not None
    assert second.fields is not None
    assert first.fields is not second.fields
    first.fields["http_status"] = 200  # as acommit stamps it
    assert second.fields["http_status"] is None
    assert (first.fields["subject_id"], second.fields["subject_id"]) == ("cust-1", "cust-2")
    assert guard.decide(ALLOWED, http).fields["http_status"] is None  # type: ignore[index]


def test_a_register_entry_applies_to_the_next_request(guard: Guard) -> None:
    subject = "cust-restricted-later"
    request = Request(*ALLOWED.__getstate__()[:4], subject)
    assert guard.decide(request).decision.allowed
    assert guard.decide(request).decision.allowed  # remembered
    register = guard.register
    assert register is not None
    register.apply(register.pseudonym(subject), [
        Record(EntryKind.RESTRICTION, "", date(2020, 1, 1))])
    refused = guard.decide(request).decision
    assert not refused.allowed
    assert refused.reason is Reason.PROCESSING_RESTRICTED
    # another subject with no entry still gets the remembered allow
    assert guard.decide(Request(*ALLOWED.__getstate__()[:4], "cust-3")).decision.allowed


def test_a_reload_applies_to_the_next_request(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(SHIPPED, folder)
    trail = make_trail(f"sqlite:///{tmp_path / 'audit.db'}", keys_at(tmp_path / "sign.key"),
                       hmac_key=KEY, journal=tmp_path / "audit.db.journal")
    holder = PolicyHolder(lambda: load_policy(folder))
    with Guard(holder, trail, hmac_key=KEY, register=_register()) as guard:
        before = guard.decide(ALLOWED).decision
        assert before.allowed
        assert guard.decide(ALLOWED).decision.allowed  # remembered
        rules = (folder / "rules.csv").read_text()
        narrowed = "\n".join(line for line in rules.splitlines()
                             if not line.startswith("p, svc:crm, relationship.management, "
                                                    "contact,"))
        (folder / "rules.csv").write_text(narrowed + "\n")
        assert holder.reload().changed
        after = guard.decide(ALLOWED)
        assert not after.decision.allowed
        assert after.decision.reason is Reason.CATEGORY_NOT_GRANTED
        assert after.decision.policy_version == holder.current.version != before.policy_version
        assert after.fields is not None
        assert after.fields["policy_version"] == holder.current.version
        (folder / "rules.csv").write_text(rules)
        assert holder.reload().changed
        assert guard.decide(ALLOWED).decision.allowed


def test_an_engine_error_is_a_denial_and_not_remembered(tmp_path: Path) -> None:
    # A guard of its own: the module's guard may remember the well-typed twin of ``odd``
    # (its key is equal: "read" == Action.READ) from the property test's random requests.
    trail = make_trail(f"sqlite:///{tmp_path / 'audit.db'}", keys_at(tmp_path / "sign.key"),
                       hmac_key=KEY, journal=tmp_path / "audit.db.journal")
    with Guard(PolicyHolder(lambda: POLICY), trail, hmac_key=KEY, register=_register()) as guard:
        odd = Request("svc:crm", "relationship.management", ("contact",), "read")  # type: ignore[arg-type]
        for _ in range(2):
            ruling = guard.decide(odd)
            assert not ruling.decision.allowed
            assert ruling.decision.reason is Reason.INTERNAL_ERROR
        listed = Request("svc:crm", "relationship.management", ["contact"])  # type: ignore[arg-type]
        assert guard.decide(listed).decision.allowed  # not a key: decided without the cache
