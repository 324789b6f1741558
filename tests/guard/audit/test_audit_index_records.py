"""Journal records indexed as bytes (``index_records``) give exactly the rows they hold.

PostgreSQL builds the event rows in the server from the records' JSON; SQLite
decodes them in Python and inserts them in multi-row statements, finding the
rows inserted by ``rowid`` for the hourly summary. Random rows (any text,
integers at their columns' bounds, nulls, ids sent twice, checkpoints between)
go in through the store, in a few transactions, and through a plain reference
(the rows decoded, bound one by one by the driver with the schema's own
statements, the summary filled from the events after); the events, the hourly
summary, the checkpoints and the saved offset must be the same, or both ways
must refuse.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._errors import AuditUnavailableError
from guard.audit import Store
from guard.audit._event import FIELD_NAMES
from guard.audit._fields import checkpoint_record, compact, decode_many
from guard.audit._schema import (
    CHECKPOINT_COLUMNS,
    EVENT_COLUMNS,
    INSERT_CHECKPOINT,
    INSERT_EVENT,
    SAVE_OFFSET,
    Row,
    checkpoint_row,
    row_checkpoint,
)
from guard.audit._store import indexed_offset
from guard.audit._summary import BACKFILL, KEY_COLUMNS
from tests.guard.audit.conftest import rows_of, run_statements

TABLES = ("audit_event", "audit_hour", "audit_checkpoint", "audit_journal_offset")
READS = (f"SELECT {EVENT_COLUMNS} FROM audit_event ORDER BY event_id",
         f"SELECT {', '.join(KEY_COLUMNS)}, decisions FROM audit_hour "
         f"ORDER BY {', '.join(KEY_COLUMNS)}",
         f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoint ORDER BY checkpoint_id",
         "SELECT journal, next_offset FROM audit_journal_offset")
INT32, INT64 = 2**31 - 1, 2**63 - 1
NOT_NULL = {"event_id", "kind", "ts", "caller", "purpose", "categories", "action", "reason",
            "rule", "lawful_basis", "policy_version", "writer_id", "prev_hash", "hash"}
text = st.text(max_size=12)


def column(name: str) -> st.SearchStrategy[Any]:
    """Values the writer may put in one column."""
    if name == "kind":
        return st.sampled_from(("decision", "outcome", "policy_loaded"))
    if name == "ts":
        return st.sampled_from(("2026-03-01T10:00:00.000001Z", "2026-03-01T11:59:59.999999Z"))
    if name == "allowed":
        return st.sampled_from((0, 1, None))
    if name == "http_status":
        return st.none() | st.integers(-INT32 - 1, INT32)
    if name in ("latency_us", "seq"):
        value = st.integers(-INT64 - 1, INT64)
        return value if name == "seq" else st.none() | value
    return text if name in NOT_NULL else st.none() | text


rows = st.lists(st.tuples(*(column(name) for name in FIELD_NAMES)), max_size=12,
                unique_by=lambda row: row[0])
checkpoints = st.lists(st.tuples(text, text, st.integers(0, INT64), text, text,
                                 st.sampled_from(("open", "periodic", "close")), text, text,
                                 st.none() | text), max_size=2, unique_by=lambda row: row[0])


def records_of(picked: list[Row], marks: list[tuple[Any, ...]], again: int) -> list[bytes]:
    """The journal records: every row, ``again`` of them a second time, checkpoints between.

    Every other row as orjson writes it (text as UTF-8), the others with ASCII escapes.
    """
    out = [(orjson.dumps if number % 2 else compact)(list(row))
           for number, row in enumerate([*picked, *picked[:again]])]
    for number, mark in enumerate(marks):
        out.insert(min(len(out), number * 5), checkpoint_record(row_checkpoint(mark)))
    return out


def snapshot(store: Store) -> list[list[tuple[Any, ...]]]:
    return [store.rows(sql) for sql in READS]


def wipe(url: str) -> None:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")
    else:
        with psycopg.connect(url) as conn:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")


def outcome(store: Store, url: str, call: Any) -> list[list[tuple[Any, ...]]] | str:
    """What one way stores (or that it refused), then the tables wiped for the next."""
    try:
        call()
        got: list[list[tuple[Any, ...]]] | str = snapshot(store)
    except (ValueError, AuditUnavailableError):
        got = "refused"
    wipe(url)
    return got


def reference(url: str, records: list[bytes], offset: int) -> None:
    """Store ``records`` the plain way, in one transaction (a driver error: ValueError)."""
    values, marks = decode_many(records)
    rows = rows_of(values)
    statements = [(INSERT_EVENT, row) for row in rows] + [
        (INSERT_CHECKPOINT, checkpoint_row(mark)) for mark in marks] + [
        (BACKFILL, ()), (SAVE_OFFSET, ("journal-t", offset))]
    run_statements(url, statements)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows, checkpoints, st.integers(0, 3), st.integers(1, 4))
def test_records_indexed_as_bytes_give_the_rows_of_the_plain_reference(
    store: Store, store_url: str, picked: list[Row], marks: list[tuple[Any, ...]], again: int,
    parts: int
) -> None:
    records = records_of(picked, marks, again)
    size = max(1, len(records) // parts)  # in a few transactions, as the indexer would
    starts = range(0, len(records), size)

    def by_bytes() -> None:
        for start in starts:
            store.index_records(records[start:start + size], "journal-t", start + size)
        if not records:  # an offset alone, as the indexer saves a shortened lane's
            store.index_records([], "journal-t", 0)

    last = starts[-1] + size if starts else 0
    expected = outcome(store, store_url, lambda: reference(store_url, records, last))
    assert outcome(store, store_url, by_bytes) == expected


GOOD = ["e-1", "decision", "2026-03-01T10:00:00.000001Z", "svc:a", None, None, "p", "[]",
        "read", 1, "allowed", "[]", "[]", "v", None, None, None, None, None, None, None, None,
        None, "w", 1, "", "h"]
OTHER = ["e-2", *GOOD[1:24], 2, *GOOD[25:]]  # the next event of the chain


@pytest.mark.parametrize("payload", [
    b"[1, 2]", b'["a"]', b"[]", b'"text"', b'{"other": 1}', b"not json",
    compact([*OTHER, "one more"]), compact(OTHER[:-1]),
    b" " + compact(OTHER),  # PostgreSQL's index took it for no event and dropped it
])
def test_a_record_that_is_not_a_journal_record_is_refused_and_nothing_is_stored(
    store: Store, payload: bytes
) -> None:
    good = compact(GOOD)
    with pytest.raises((ValueError, AuditUnavailableError)):
        store.index_records([good, payload], "journal-t", 2)
    assert store.rows("SELECT count(*) FROM audit_event") == [(0,)]
    assert indexed_offset(store, "journal-t") == 0


def test_good_records_are_stored(store: Store) -> None:
    store.index_records([compact(GOOD), compact(OTHER)], "journal-t", 2)
    assert store.rows("SELECT event_id, seq, allowed FROM audit_event ORDER BY seq") == [
        ("e-1", 1, 1), ("e-2", 2, 1)]
    assert indexed_offset(store, "journal-t") == 2


def _ints(start: int, count: int) -> bytes:
    return b",".join(b"%d" % i for i in range(start, start + count))


WIDTH = len(FIELD_NAMES)
OPEN = b"[" + _ints(0, WIDTH - 2) + b",[0]"  # its own array left open


@pytest.mark.parametrize(("first", "second"), [
    # the first's last string closed in the second: their contents side by side are 2 rows
    (b"[" + _ints(0, WIDTH - 1) + b',"x]', b'[y",' + _ints(100, WIDTH) + b"]"),
    # the first's array closed by the second: the two as elements of one array are 2 rows
    (OPEN, b"[1]],[" + _ints(100, WIDTH) + b"]"),
])
def test_records_whose_brackets_close_each_other_are_refused(
        store: Store, first: bytes, second: bytes) -> None:
    """Neither record is JSON; read together, they would be two events' values."""
    with pytest.raises((ValueError, AuditUnavailableError)):
        store.index_records([first, second], "journal-t", 2)
    assert store.rows("SELECT count(*) FROM audit_event") == [(0,)]
    assert indexed_offset(store, "journal-t") == 0
