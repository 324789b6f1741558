"""Two journal records claiming one place in a chain: the index stops there, loudly, for good.

A lane copied from another and edited (here: one record's event id changed, its
frame's checksum made right again) holds an event whose writer and seq the index
already holds under another id. Retrying that insert spun for ever and held up
every later record; now the lane's index stops at that record, naming it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from guard._errors import AuditUnavailableError
from guard.audit import (
    EventKind,
    Store,
    load_public_key,
    load_signing_key,
    new_event_id,
    open_store,
)
from guard.audit._event import FIELD_NAMES
from guard.audit._fields import ChainKey
from guard.audit._follow import ChildIndexer, Follower
from guard.audit._indexer import Indexer
from guard.audit._journal import Journal, read_journal
from guard.audit._jverify import verify_journal
from guard.audit._jwriter import JournalWriter
from guard.audit._store import RecordRefusedError, indexed_offset
from tests.guard.audit.conftest import CHAIN_KEY, HMAC_KEY, Keys, make_trail

FIELDS = {"caller": "svc:crm", "purpose": "p", "categories": ("c",), "action": "read",
          "allowed": True, "reason": "allowed", "subject_id": "cust-1"}
_WRITER, _SEQ = FIELD_NAMES.index("writer_id"), FIELD_NAMES.index("seq")


def copied_lane_with_one_id_changed(folder: Path, *, after: tuple[bytes, ...] = ()
                                    ) -> tuple[int, str, str, str]:
    """Copy lane-0's records into lane-1 (through the journal API), the event of seq 3 under
    a new id, then ``after``; its offset in lane-1, writer, the original id and the forged one."""
    records = [r for r in read_journal(folder / "lane-0") if isinstance(r, tuple)]
    forged, at = new_event_id(), -1
    copy = []
    for offset, payload in records:
        values = orjson.loads(payload)
        if isinstance(values, list) and values[_SEQ] == 3:
            original, writer = values[0], values[_WRITER]
            at = offset
        copy.append(payload.replace(original.encode(), forged.encode(), 1)
                    if at == offset else payload)
    assert at >= 0
    lane = Journal(folder / "lane-1")
    lane.append(copy + list(after))
    lane.close()
    return at, writer, original, forged


def test_a_second_record_for_a_taken_chain_place_stops_the_index(
        store_url: str, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    trail = make_trail(store_url, keys)
    ids = [trail.record_fields(EventKind.DECISION, FIELDS) for _ in range(6)]
    trail.close()  # lane-0 indexed: 6 events and their checkpoints
    folder = keys.signing.parent / "journal"
    at, writer, original, forged = copied_lane_with_one_id_changed(folder)
    assert original in ids

    store = open_store(store_url)
    follower = Follower(folder, store, interval=0.01)
    follower.discover()
    lane = folder / "lane-1"
    try:
        with pytest.raises(AuditUnavailableError) as raised:
            follower.catch_up(20)  # a spinning index: no answer for 20 s, then "no progress"
        stop = (f"stopped at lane-1 record {at}: writer {writer} seq 3 is event {original} "
                f"already, this record is event {forged}")
        assert stop in str(raised.value), str(raised.value)
        indexer = follower.indexers[lane]
        assert indexer.stopped is not None
        assert indexer.stopped.startswith(stop)
        assert stop in follower.progress()
        assert [r.getMessage() for r in caplog.records if stop in r.getMessage()] == [
            f"audit index of {lane} failed: {indexer.stopped}"]  # one line, not one a retry
        # The records before it are read (copies: the index holds each event once), the
        # forged one and the rest are not, and nothing is retried any more.
        assert indexed_offset(store, indexer._key) == at
        assert store.rows("SELECT count(*) FROM audit_event") == [(6,)]
        assert store.rows("SELECT count(*) FROM audit_event WHERE event_id = ?",
                          (forged,)) == [(0,)]
        assert not indexer.relieve(time.monotonic() + 3600)
        indexer._thread.join(5)
        assert not indexer._thread.is_alive()
    finally:
        follower.close()

    # The journal check names the disagreement (the index has not read the forged record).
    report = verify_journal(store, folder, load_public_key(keys.public), chain_key=CHAIN_KEY)
    assert not report.ok
    assert [(p.kind, p.writer_id, p.seq, p.event_id, p.message) for p in report.journal.problems
            ] == [("inserted", writer, 3, forged, "a second event claims seq 3")]
    assert not report.index  # the index holds no event the journal lacks, none it differs on
    store.close()

    # The service's index child stops there too (again after a restart) and says so: what
    # readiness shows ("audit journal writable; index behind: stopped at lane-1 ...").
    child = ChildIndexer(folder, store_url)
    try:  # a generous deadline: a loaded machine starts a Python child in seconds
        deadline = time.monotonic() + 60
        while not (child.last_error or "").startswith(stop) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (child.last_error or "").startswith(stop), child.last_error
        assert child.restarts == 0
    finally:
        child.close()


def test_a_record_that_is_no_event_past_the_first_chunk_does_not_hide_the_stop(
        store_url: str, keys: Keys) -> None:
    """The store inserts a batch in chunks: the taken place is in the first, a framed record
    that is no event in a later one; finding the taken place reads no further than it must."""
    trail = make_trail(store_url, keys)
    for _ in range(1200):  # more than one chunk of records
        trail.record_fields(EventKind.DECISION, FIELDS)
    trail.close()
    folder = keys.signing.parent / "journal"
    at, writer, original, forged = copied_lane_with_one_id_changed(
        folder, after=(b'["not", "an", "event"]',))
    follower = Follower(folder, open_store(store_url), interval=0.01)
    follower.discover()
    try:
        with pytest.raises(AuditUnavailableError) as raised:
            follower.catch_up(20)
        assert (f"stopped at lane-1 record {at}: writer {writer} seq 3 is event {original} "
                f"already, this record is event {forged}") in str(raised.value), str(raised.value)
    finally:
        follower.close()


def _refused(values: list[object], how: str) -> bytes:
    if how == "null kind":
        values[FIELD_NAMES.index("kind")] = None
    return {"not JSON": b"[not JSON]", "one value short": orjson.dumps(values[:-1])}.get(
        how, orjson.dumps(values))


@pytest.mark.parametrize("how", ["null kind", "not JSON", "one value short"])
def test_a_record_the_store_refuses_stops_the_index_there(
        store_url: str, keys: Keys, caplog: pytest.LogCaptureFixture, how: str) -> None:
    """A record the store cannot take (a null where none may be, no JSON, no event's values)
    was retried every second for ever, holding the lane back; it stops the lane as a taken
    chain place does, after the records before it."""
    trail = make_trail(store_url, keys)
    for _ in range(3):
        trail.record_fields(EventKind.DECISION, FIELDS)
    trail.close()
    folder = keys.signing.parent / "journal"
    copy = []
    for _offset, payload in (r for r in read_journal(folder / "lane-0") if isinstance(r, tuple)):
        values = orjson.loads(payload)
        if isinstance(values, list):  # an event of a chain of its own, the second one refused
            values[0], values[_WRITER] = new_event_id(), "copy"
            copy.append(_refused(values, how) if len(copy) == 1 else orjson.dumps(values))
    lane = Journal(folder / "lane-1")
    lane.append(copy)
    lane.close()

    store = open_store(store_url)
    follower = Follower(folder, store, interval=0.01)
    follower.discover()
    try:
        with pytest.raises(AuditUnavailableError) as raised:
            follower.catch_up(10)
        stop = "stopped at lane-1 record 1: the store refuses it: "
        assert stop in str(raised.value), str(raised.value)
        indexer = follower.indexers[folder / "lane-1"]
        assert (indexer.stopped or "").startswith(stop)
        assert stop in follower.progress()
        assert len([r for r in caplog.records if stop in r.getMessage()]) == 1
        assert indexed_offset(store, indexer._key) == 1
        assert store.rows("SELECT count(*) FROM audit_event WHERE writer_id = 'copy'") == [(1,)]
        indexer._thread.join(5)
        assert not indexer._thread.is_alive()
    finally:
        follower.close()
        store.close()


class _RefusedOnceTogether:
    """A store that refuses the first batch of several records as if a record's fault, then
    takes them: PostgreSQL's unique violation on ``(writer_id, seq)`` when an indexer of a
    copy of the lane stores the same events meanwhile (``ON CONFLICT (event_id)`` does not
    arbitrate that index), a refusal of the batch's moment, not of a record."""

    def __init__(self, store: Store) -> None:
        self.store, self.refused = store, False

    def index_records(self, records: Sequence[bytes], journal: str, next_offset: int) -> None:
        if len(records) > 1 and not self.refused:
            self.refused = True
            raise RecordRefusedError("duplicate key value violates unique constraint "
                                     '"audit_event_writer_id_seq_key"')
        self.store.index_records(records, journal, next_offset)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_batch_refused_once_for_a_race_does_not_stop_the_lane(
        keys: Keys, tmp_path: Path) -> None:
    """The halving named the batch's last record without asking the store about it alone:
    a batch refused once, for no record's fault, stopped its lane for good."""
    journal = Journal(tmp_path / "journal" / "lane-0")
    w = JournalWriter(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(keys.signing),
                      writer_id="test", chain_key=ChainKey(CHAIN_KEY))
    assert all(w.results(EventKind.DECISION, [FIELDS] * 3))
    w.close()
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    indexer = Indexer(journal.folder, cast(Store, _RefusedOnceTogether(store)), interval=0.01)
    try:
        assert indexer.wait(journal.next_offset, timeout=30), indexer.stopped
        assert indexer.stopped is None
        assert store.rows("SELECT count(*) FROM audit_event") == [(3,)]
    finally:
        indexer.close()
        journal.close()
        store.close()
