"""The in-memory index: the audit trail's pseudonyms, exact look-ups, compact storage."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from guard.audit import pseudonymise
from guard.rights import EntryKind, Record, Register
from guard.rights._index import SubjectIndex

R1 = (Record(EntryKind.OBJECTION, "marketing", date(2024, 5, 1)),)
R2 = (Record(EntryKind.RESTRICTION, "", date(2025, 1, 2)),
      Record(EntryKind.CONSENT_WITHDRAWN, "marketing.third_party", date(2025, 2, 3)))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=150), st.text(min_size=1, max_size=40),
       st.text(min_size=1, max_size=40))
def test_lookup_uses_the_audit_trails_pseudonym(key: bytes, subject: str, other: str) -> None:
    register = Register(key)
    try:
        subject.encode()
        other.encode()
    except UnicodeEncodeError:
        return
    assert register.pseudonym(subject) == pseudonymise(key, subject)
    register.apply(pseudonymise(key, subject), list(R1))
    assert register.lookup(subject) == R1
    if other != subject:
        assert register.lookup(other) is None


def test_keys_sharing_their_first_64_bits_stay_apart() -> None:
    index = SubjectIndex()
    index.put(7 << 40, 1, R1)
    index.put(7 << 40, 3, R2)
    index.put(7 << 40, 2, ())
    assert index.get(7 << 40, 1) == R1
    assert index.get(7 << 40, 3) == R2
    assert index.get(7 << 40, 2) == ()
    assert index.get(7 << 40, 4) is None
    assert index.get(8 << 40, 1) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
                          st.sampled_from([(), R1, R2])), max_size=60))
def test_puts_and_a_bulk_load_agree_with_a_dict(items: list[tuple[int, int, tuple[Record, ...]]]
                                               ) -> None:
    index = SubjectIndex()
    expected: dict[tuple[int, int], tuple[Record, ...]] = {}
    for hi, lo, state in items:
        index.put(hi, lo, state)
        expected[(hi, lo)] = state
    for (hi, lo), state in expected.items():
        assert index.get(hi, lo) == state
    assert index.empty == (not expected)
    loaded = SubjectIndex()
    loaded.load((hi, lo, state) for (hi, lo), state in expected.items())
    assert len(loaded) == len(expected)
    assert loaded.empty == (not expected)
    for (hi, lo), state in expected.items():
        assert loaded.get(hi, lo) == state
    index.load([])  # a reload of a register whose entries are all gone
    assert index.empty


def test_replaced_states_are_compacted() -> None:
    index = SubjectIndex()
    for n in range(200_000):  # each put leaves the old bytes behind until a compaction
        index.put(1 << 63, 5, R2 if n % 2 else R1)
    assert index.get(1 << 63, 5) == R2  # the last put (n odd)
    assert index.nbytes() < len(index.bitmap) + (2 << 20)
