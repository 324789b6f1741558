"""The indexer: batches on a timer or a full batch, reads the journal in blocks, never skips."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard._errors import AuditUnavailableError
from guard.audit import EventKind, load_signing_key, pseudonymise
from guard.audit._checkpoint import Checkpoint
from guard.audit._event import GENESIS_HASH
from guard.audit._fields import (
    ChainKey,
    Linker,
    Pseudonyms,
    _listed,
    compact,
    content,
    decode_many,
)
from guard.audit._indexer import Indexer
from guard.audit._journal import Journal, JournalReader, segments
from guard.audit._jwriter import JournalWriter
from guard.audit._schema import Row
from guard.audit._sqlite import SqliteStore
from guard.audit._store import indexed_offset
from tests.guard.audit.conftest import (
    CHAIN_KEY,
    HMAC_KEY,
    Keys,
    frame,
    journal_with_a_bad_second_record,
    rows_of,
)

FIELDS: dict[str, Any] = {
    "caller": "svc:crm", "purpose": "relationship.management",
    "categories": ("contact.email",), "action": "read", "allowed": True,
    "reason": "allowed", "rule": ("rules.csv:1",), "lawful_basis": ("contract",),
    "policy_version": "sha256:test", "subject_id": "cust-1",
}


class Counting(SqliteStore):
    """An SQLite store that counts its index transactions."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.transactions: list[int] = []

    def index_records(self, records: Any, journal: str, next_offset: int) -> None:
        super().index_records(records, journal, next_offset)
        self.transactions.append(len(records))


def writer(journal: Journal, keys: Keys) -> JournalWriter:
    return JournalWriter(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(keys.signing),
                         writer_id="test", chain_key=ChainKey(CHAIN_KEY))


def test_appends_wait_for_the_timer_and_are_indexed_in_one_transaction(
    keys: Keys, tmp_path: Path
) -> None:
    store = Counting(tmp_path / "audit.db")
    journal = Journal(tmp_path / "j")
    indexer = Indexer(journal.folder, store, interval=3600)  # the timer never fires here
    trail = writer(journal, keys)
    for _ in range(5):
        trail.results(EventKind.DECISION, [FIELDS] * 3)  # five appends
    assert journal.next_offset == 16  # the chain's opening checkpoint and 15 events
    assert indexer.offset == 0  # not one transaction per append
    assert store.transactions == []
    assert indexer.wait(journal.next_offset, timeout=30)  # a waiter does not wait for the timer
    assert store.transactions == [16]
    trail.close()
    indexer.close()
    journal.close()
    assert store.rows("SELECT count(*) FROM audit_event") == [(15,)]
    store.close()


def test_a_backlog_is_indexed_in_transactions_of_at_most_batch_records(
    keys: Keys, tmp_path: Path
) -> None:
    store = Counting(tmp_path / "audit.db")
    journal = Journal(tmp_path / "j")
    indexer = Indexer(journal.folder, store, batch=10, interval=0.05)
    trail = writer(journal, keys)
    trail.results(EventKind.DECISION, [FIELDS] * 25)
    assert indexer.wait(journal.next_offset, timeout=30)
    assert all(size <= 10 for size in store.transactions)
    assert sum(store.transactions) == journal.next_offset == 26
    trail.close()
    indexer.close()
    journal.close()
    store.close()


def test_a_record_that_does_not_decode_stops_the_index_and_is_never_skipped(
    tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "audit.db")
    journal = Journal(tmp_path / "j")
    journal.append([b"not an audit record"])
    indexer = Indexer(journal.folder, store, interval=0.01, retry=0.01)
    assert indexer.wait(journal.next_offset, timeout=0.5) is False
    head = content(EventKind.DECISION, FIELDS, HMAC_KEY, "2026-01-01T00:00:00.000000Z", "e-1")
    journal.append([Linker("w", None).link(head, 1, GENESIS_HASH)[1]])  # a good one after it
    assert indexer.wait(journal.next_offset, timeout=0.5) is False
    assert indexer.offset == 0
    assert indexer.failures.cause is not None
    indexer.close(timeout=0.1)
    journal.close()
    assert indexed_offset(store, journal.journal_id) == 0
    store.close()


# -- reading the journal in blocks -----------------------------------------------------------


def test_the_reader_reads_frames_across_blocks_and_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=300)
    payloads = [bytes([65 + n % 26]) * (1 + n * 7 % 90) for n in range(60)]
    for start in range(0, 60, 4):
        journal.append(payloads[start:start + 4])
    assert len(segments(tmp_path / "j")) > 3
    reader = JournalReader(tmp_path / "j", 3, block=16)  # smaller than most frames
    got = reader.read(40, 10) + reader.read(40, 100) + reader.read(60, 100)
    assert got == payloads[3:]
    assert reader.read(60, 100) == []
    reader.close()
    journal.close()


def test_bytes_past_the_durable_end_are_read_again(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.append([b"one", b"two"])
    [(_, path)] = segments(tmp_path / "j")
    size = len(frame(b"one") + frame(b"two"))  # the zeros ahead of the records follow
    with path.open("r+b") as handle:  # a batch being written, not yet durable
        handle.seek(size)
        handle.write(frame(b"torn") + frame(b"tail"))
    reader = JournalReader(tmp_path / "j", 0)
    assert reader.read(2, 100) == [b"one", b"two"]
    with path.open("r+b") as handle:  # the batch failed: cut off, and another written
        handle.truncate(size)
        handle.seek(size)
        handle.write(frame(b"three"))
    assert reader.read(3, 100) == [b"three"]
    reader.close()
    journal.close()


def test_a_bad_frame_ends_a_read_and_the_next_read_raises(tmp_path: Path) -> None:
    journal_with_a_bad_second_record(tmp_path / "j")
    reader = JournalReader(tmp_path / "j", 0)
    assert reader.read(3, 10) == [b"alpha"]
    with pytest.raises(AuditUnavailableError, match="bad frame at offset 1"):
        reader.read(3, 10)
    assert reader.offset == 1
    reader.close()


# -- the writer's field helpers ----------------------------------------------------------------


@given(st.binary(min_size=1, max_size=200), st.text(max_size=40))
def test_pseudonyms_equal_pseudonymise(key: bytes, subject: str) -> None:
    assert Pseudonyms(key)(subject) == pseudonymise(key, subject)


_ITEMS = st.one_of(st.text(max_size=12), st.integers(), st.booleans())


@given(st.lists(_ITEMS, max_size=4), st.booleans())
def test_list_fields_are_the_compact_json_of_their_items(items: list[Any], as_tuple: bool) -> None:
    value = tuple(items) if as_tuple else items
    expected = compact(list(value)).decode()
    assert _listed(value) == expected
    assert _listed(value) == expected  # again: from the cache, when cached


def test_a_cached_text_tuple_is_not_given_to_an_equal_tuple_of_other_types() -> None:
    assert _listed(("1",)) == '["1"]'
    assert _listed((1,)) == "[1]"
    assert _listed((True,)) == "[true]"
    assert _listed((1,)) == "[1]"


def test_decode_many_equals_decode_one_by_one(keys: Keys) -> None:
    from guard.audit._checkpoint import CheckpointKind, Terms, sign_checkpoint
    from guard.audit._event import FIELD_NAMES
    from guard.audit._fields import checkpoint_record

    row: Row = ("id", "decision", "2026-01-01T00:00:00.000000Z", "é\u2028", None, 1, 2.5,
                "],[", *range(len(FIELD_NAMES) - 8))
    cp = sign_checkpoint(load_signing_key(keys.signing), checkpoint_id="c", writer_id="w",
                         seq=1, hash_="h", ts="2026-01-01T00:00:00.000000Z",
                         kind=CheckpointKind.OPEN, terms=Terms(3, 1000, 60.0))
    payloads = [compact(row), checkpoint_record(cp), orjson.dumps(list(row))]
    values, checkpoints = decode_many(payloads)
    one = [decode_many([p]) for p in payloads]
    assert rows_of(values) == [tuple(got) for got, _ in one if got] == [row, row]
    assert checkpoints == [c for _, got in one for c in got]
    assert all(isinstance(c, Checkpoint) for c in checkpoints)
    with pytest.raises(ValueError, match="not an audit journal record"):
        decode_many([compact(row), b'{"other": 1}'])
    for bad in (b"[1],[2", b"[]", compact(row[:-1]), compact(row)[:-1] + b"x",
                compact(row)[:-1] + b',"more"]'):  # not one record of one event's values
        with pytest.raises(ValueError):
            decode_many([compact(row), bad])


def test_two_records_that_are_no_events_never_decode_as_two_together() -> None:
    """Neither record is an array of one event's values, but their contents side by side
    are twice as many values: each record is parsed on its own, so neither is a row."""
    from guard.audit._event import FIELD_NAMES

    width = len(FIELD_NAMES)
    first = b"[" + b",".join(b"%d" % i for i in range(width - 2)) + b",[0]"  # ends "[0]"
    second = b"[1]," + b",".join(b"%d" % i for i in range(width + 1)) + b"]"  # starts "[1],"
    for alone in (first, second):
        with pytest.raises(ValueError):
            orjson.loads(alone)
    with pytest.raises(ValueError, match="not an audit journal record"):
        decode_many([first, second])


# -- threads waiting on their batch ------------------------------------------------------------


class HeldJournal:
    """A journal whose appends wait until the test lets them go."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.go = threading.Event()

    def append(self, payloads: Any) -> int:
        self.go.wait(30)
        return self.journal.append(payloads)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.journal, name)


def test_threads_hear_their_batch_and_a_timed_out_waiter_leaves_the_others_waiting(
    keys: Keys, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    held = HeldJournal(journal)
    trail = JournalWriter(held, hmac_key=HMAC_KEY,  # type: ignore[arg-type]
                          signing_key=load_signing_key(keys.signing), writer_id="test",
                          chain_key=ChainKey(CHAIN_KEY))
    with pytest.raises(AuditUnavailableError, match="did not confirm"):
        trail.submit(EventKind.DECISION, FIELDS, timeout=0.05)  # its batch is held
    ids: list[str] = []

    def one() -> None:
        ids.extend(trail.submit(EventKind.DECISION, FIELDS) for _ in range(20))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    held.go.set()
    for thread in threads:
        thread.join(30)
    assert len(ids) == 320
    assert len(set(ids)) == 320
    trail.flush()
    trail.close()
    journal.close()


class Broken(JournalWriter):
    """A writer whose thread fails at once (a bug escaping the loop)."""

    def _run(self) -> None:
        raise RuntimeError("bug")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_writer_whose_thread_died_refuses_events_at_once(keys: Keys, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    trail = Broken(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(keys.signing),
                   writer_id="test", chain_key=ChainKey(CHAIN_KEY))
    trail._thread.join(30)
    assert trail.alive is False
    with pytest.raises(AuditUnavailableError, match="closed"):
        trail.submit(EventKind.DECISION, FIELDS, timeout=30)
    journal.close()
