"""The writer reads the pseudonyms the subject register digested, and only the trail's.

The register's look-up makes a subject's HMAC digest under the subject key on the
event loop; the writer pseudonymises the event's raw ``subject_id`` from that digest
instead of making it again, when the register's key is the trail's. Whatever the
register digested or not, the stored pseudonym is the trail's HMAC of the id and no
raw id reaches the journal.
"""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._guard import Guard
from guard._types import Request
from guard.audit import EventKind, load_signing_key, pseudonymise
from guard.audit._fields import ChainKey, Pseudonyms
from guard.audit._journal import Journal, read_journal
from guard.audit._jwriter import JournalWriter
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from guard.rights import EntryKind, Record, Register
from tests.guard.audit.conftest import CHAIN_KEY, HMAC_KEY, Keys, make_trail

POLICY = load_policy(Path(__file__).resolve().parents[3] / "policies")
SUBJECT_COLUMN = 14  # the row's ``subject``
ids = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40).map(
    lambda text: "raw-id:" + text)  # found in the journal's bytes if it ever reached them


class _NoDigest:
    """Pads that fail when copied: a digest made with them raises."""

    def copy(self) -> Any:
        raise AssertionError("the writer digested a subject the register had digested")


def _register(key: bytes) -> Register:
    """A register under ``key`` with one entry, so that its look-ups digest subjects."""
    register = Register(key)
    register.apply(register.pseudonym("someone else"),
                   [Record(EntryKind.RESTRICTION, "", date(2020, 1, 1))])
    return register


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ids, st.booleans()), max_size=30))
def test_a_shared_pseudonym_is_the_writers_own_digest(subjects: list[tuple[str, bool]]
                                                      ) -> None:
    register = _register(HMAC_KEY)
    pseudonyms = Pseudonyms(HMAC_KEY)
    assert pseudonyms.share(register.digests, register.pseudonym)
    for raw, looked_up in subjects:
        if looked_up:
            register.lookup(raw)
        assert pseudonyms(raw) == pseudonymise(HMAC_KEY, raw)


@settings(max_examples=100, deadline=None)
@given(st.lists(ids, min_size=1, max_size=20))
def test_a_subject_the_register_digested_is_not_digested_again(subjects: list[str]) -> None:
    register = _register(HMAC_KEY)
    pseudonyms = Pseudonyms(HMAC_KEY)
    assert pseudonyms.share(register.digests, register.pseudonym)
    for raw in subjects:
        register.lookup(raw)
    pseudonyms._inner = pseudonyms._outer = _NoDigest()  # type: ignore[assignment]
    for raw in subjects:
        assert pseudonyms(raw) == pseudonymise(HMAC_KEY, raw)


def test_a_register_under_another_key_is_not_shared() -> None:
    register = _register(b"o" * 32)
    pseudonyms = Pseudonyms(HMAC_KEY)
    assert not pseudonyms.share(register.digests, register.pseudonym)
    register.lookup("customer-7")
    assert pseudonyms("customer-7") == pseudonymise(HMAC_KEY, "customer-7")


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("share")
    signing = tmp / "sign.key"
    load_signing_key(signing, create=True)
    journal = Journal(tmp / "j")
    register = _register(HMAC_KEY)
    writer = JournalWriter(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(signing),
                           writer_id="test", chain_key=ChainKey(CHAIN_KEY))
    assert writer.share_digests(register.digests, register.pseudonym)
    yield writer, register, journal
    writer.close()
    journal.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(ids, st.booleans()), min_size=1, max_size=20))
def test_the_journal_holds_the_trails_pseudonyms_and_no_raw_id(
    shared: Any, subjects: list[tuple[str, bool]]
) -> None:
    writer, register, journal = shared
    before = journal.next_offset
    for raw, looked_up in subjects:
        if looked_up:
            register.lookup(raw)

    async def commit() -> list[str]:
        return await asyncio.gather(*(writer.start(EventKind.DECISION, {
            "caller": "svc:crm", "purpose": "billing", "action": "read", "allowed": True,
            "reason": "allowed", "subject_id": raw}) for raw, _ in subjects))

    made = asyncio.run(commit())
    records = {orjson.loads(payload)[0]: payload for offset, payload in
               read_journal(journal.folder)  # type: ignore[misc]
               if offset >= before and payload[:1] == b"["}
    for (raw, _), event_id in zip(subjects, made, strict=True):
        assert orjson.loads(records[event_id])[SUBJECT_COLUMN] == pseudonymise(HMAC_KEY, raw)
    data = b"".join(records.values())
    for raw, _ in subjects:
        assert orjson.dumps(raw)[1:-1] not in data
        assert raw.encode() not in data


def test_a_guard_hands_its_registers_digests_to_the_writer(tmp_path: Path, keys: Keys) -> None:
    trail = make_trail(f"sqlite:///{tmp_path / 'audit.db'}", keys, hmac_key=HMAC_KEY,
                       journal=tmp_path / "audit.db.journal")
    with Guard(PolicyHolder(lambda: POLICY), trail, hmac_key=HMAC_KEY,
               register=_register(HMAC_KEY)) as guard:
        request = Request("svc:crm", "relationship.management", ("contact",),
                          subject="customer-9")
        ruling = guard.decide(request)  # the register digests the subject on the way
        pseudonyms = trail.writer._pseudonyms
        pseudonyms._inner = pseudonyms._outer = _NoDigest()  # type: ignore[assignment]
        checked = guard.commit(ruling)
        assert checked.decision.allowed, checked.decision.reason
        trail.flush()
        rows = trail.store.rows("SELECT subject FROM audit_event WHERE event_id = ?",
                                (checked.decision_id,))
        assert rows == [(pseudonymise(HMAC_KEY, "customer-9"),)]
