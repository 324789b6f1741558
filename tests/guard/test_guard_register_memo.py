"""The register remembers subjects' digests, never their entries: a change applies at once.

``Register.lookup`` keeps the keyed digest of the latest subjects it was asked
about (it never changes), and asks the index every time. Compared, for random
sequences of look-ups, register changes and reloads, with the digest computed
afresh; and through ``Guard.decide`` with the engine asked afresh (same decision,
reason, basis and rule). While no subject has an entry no digest is made at all,
and an entry recorded later applies to the next look-up of a subject seen before.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._guard import Guard
from guard._types import Reason, Request
from guard.engine import decide
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from guard.rights import EntryKind, Record, Register
from guard.rights import _register as register_module
from guard.rights._entries import State
from guard.rights._index import split_digest
from tests.guard.audit.conftest import keys_at, make_trail

KEY = b"r" * 32
POLICY = load_policy(Path(__file__).resolve().parents[2] / "policies")
SUBJECTS = [f"cust-{n}" for n in range(6)] + ["", "ünï", "x" * 300]
UNENCODABLE = "cust-\ud800"  # a lone surrogate: no digest can be made of it
KINDS = {
    "restrict": [Record(EntryKind.RESTRICTION, "", date(2020, 1, 1))],
    "object": [Record(EntryKind.OBJECTION, "relationship.management", date(2020, 1, 1))],
    "erase": [Record(EntryKind.ERASURE_REQUESTED, "", date(2020, 1, 1))],
    "consent": [Record(EntryKind.CONSENT_GRANTED, "relationship.management",
                       date(2020, 1, 1))],
    "none": [],
}
steps = st.lists(st.one_of(
    st.tuples(st.just("lookup"), st.sampled_from(SUBJECTS)),
    st.tuples(st.just("apply"), st.sampled_from(SUBJECTS), st.sampled_from(sorted(KINDS))),
    st.tuples(st.just("reload")),
), min_size=1, max_size=40)


def _afresh(register: Register, subject: str) -> State | None:
    """The subject's entries, its digest computed now (no memo)."""
    hi, lo = split_digest(hmac.digest(KEY, subject.encode(), "sha256"))
    return register.index.get(hi, lo)


class _Afresh:
    """The register as the engine asks it, each digest computed afresh (the slow path)."""

    def __init__(self, register: Register) -> None:
        self.register = register

    def lookup(self, subject: str) -> State | None:
        return _afresh(self.register, subject)


def _outcome(look: Callable[[], State | None]) -> object:
    """What a look-up answers, or the class of what it raised."""
    try:
        return look()
    except Exception as exc:  # compared: the fast path must raise as the slow one
        return type(exc)


@settings(max_examples=200, deadline=None)
@given(steps, st.sampled_from([2, 3, 4096]))
def test_a_look_up_is_the_one_made_afresh(ops: list[tuple[str, ...]], bound: int) -> None:
    register = Register(KEY)
    original = register_module.DIGESTS
    register_module.DIGESTS = bound  # small bounds: the memo is forgotten and refilled
    try:
        for op in ops:
            if op[0] == "apply":
                register.apply(register.pseudonym(op[1]), KINDS[op[2]])
            elif op[0] == "reload":
                register.index.load([])  # every entry gone, as a reload of an empty store
            for subject in [*SUBJECTS, UNENCODABLE]:
                assert _outcome(lambda s=subject: register.lookup(s)) == _outcome(
                    lambda s=subject: _afresh(register, s)), (op, subject)
            assert len(register._digests) <= bound
    finally:
        register_module.DIGESTS = original


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guard]:
    tmp = tmp_path_factory.mktemp("register-memo")
    trail = make_trail(f"sqlite:///{tmp / 'audit.db'}", keys_at(tmp / "sign.key"),
                       hmac_key=KEY, journal=tmp / "audit.db.journal")
    with Guard(PolicyHolder(lambda: POLICY), trail, hmac_key=KEY,
               register=Register(KEY)) as made:
        yield made


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(SUBJECTS), st.sampled_from(sorted(KINDS)),
                          st.booleans()), min_size=1, max_size=12))
def test_a_subject_rights_change_applies_to_the_next_decision(
    guard: Guard, changes: list[tuple[str, str, bool]]
) -> None:
    register = guard.register
    assert register is not None
    for subject, kind, emptied in changes:
        request = Request("svc:crm", "relationship.management", ("contact",),
                          subject=subject)
        guard.decide(request)  # remembered: the subject's digest, the decision without it
        register.apply(register.pseudonym(subject), KINDS[kind])
        if emptied:  # every entry gone (a reload of an empty store): no digest is made
            register.index.load([])
        for asked in SUBJECTS:
            one = Request("svc:crm", "relationship.management", ("contact",), subject=asked)
            ruling = guard.decide(one)
            fresh = decide(guard.holder.current, one, _Afresh(register))
            assert (ruling.decision.allowed, ruling.decision.reason,
                    ruling.decision.lawful_basis, ruling.decision.rule) == (
                fresh.allowed, fresh.reason, fresh.lawful_basis, fresh.rule), (subject, kind)
            assert ruling.decision == fresh


class _NoDigest:
    """Stands for a key pad's hash state: making a digest from it fails the test."""

    def copy(self) -> None:
        raise AssertionError("a digest was made")


def test_an_empty_register_makes_no_digest_and_a_later_entry_applies() -> None:
    register = Register(KEY)
    pads = register._inner, register._outer
    register._inner = register._outer = _NoDigest()  # type: ignore[assignment]
    for subject in [*SUBJECTS, *(f"new-{n}" for n in range(100))]:
        assert register.lookup(subject) is None
    with pytest.raises(UnicodeEncodeError):  # as the digest's encoding raised
        register.lookup(UNENCODABLE)
    with pytest.raises(AttributeError):  # not text: as before, no answer
        register.lookup(b"cust-0")  # type: ignore[arg-type]
    register._inner, register._outer = pads
    register.apply(register.pseudonym("cust-1"), KINDS["restrict"])  # after cust-1 was seen
    assert register.lookup("cust-1") == tuple(KINDS["restrict"])
    assert register.lookup("cust-2") is None
    register.index.load([])  # emptied again (a reload of an empty store)
    assert register.lookup("cust-1") is None


def test_a_guard_with_an_empty_register_decides_a_later_entry_and_fails_closed(
    tmp_path: Path,
) -> None:
    trail = make_trail(f"sqlite:///{tmp_path / 'audit.db'}", keys_at(tmp_path / "sign.key"),
                       hmac_key=KEY, journal=tmp_path / "audit.db.journal")
    with Guard(PolicyHolder(lambda: POLICY), trail, hmac_key=KEY,
               register=Register(KEY)) as guard:
        register = guard.register
        assert register is not None
        request = Request("svc:crm", "relationship.management", ("contact",), subject="cust-9")
        assert guard.decide(request).decision.allowed  # first seen: the register is empty
        register.apply(register.pseudonym("cust-9"), KINDS["restrict"])
        refused = guard.decide(request).decision
        assert (refused.allowed, refused.reason) == (False, Reason.PROCESSING_RESTRICTED)
        assert guard.decide(Request("svc:crm", "relationship.management", ("contact",),
                                    subject="cust-10")).decision.allowed
        register.index.load([])
        bad = Request("svc:crm", "relationship.management", ("contact",), subject=UNENCODABLE)
        ruling = guard.decide(bad)  # empty register: still no answer for an id it cannot key
        assert (ruling.decision.allowed, ruling.decision.reason) == (False,
                                                                     Reason.INTERNAL_ERROR)
