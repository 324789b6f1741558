"""How SQLite's index binds and inserts rows: a few statement sizes, nulls bound as such.

A batch of every size up to a backlog's is stored whole and exactly, through
statements of the six sizes only (each compiled once per connection); a column
holding one text or null in every row of a batch is bound once a statement (binding
a value costs the ``sqlite3`` module about 800 instructions); null columns are stored as SQL
nulls, in the index's processes through an adapter for None (the adapter
protocol's failed look-ups cost about 2,000 instructions a null value), which a
service's process does not get.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._errors import AuditUnavailableError
from guard.audit import EventKind, Store, _sqlite, open_store
from guard.audit._checkpoint import Checkpoint, CheckpointKind
from guard.audit._event import FIELD_NAMES
from guard.audit._fields import checkpoint_record, compact, decode_many
from guard.audit._ids import new_event_id
from guard.audit._schema import Row
from guard.audit._sqlite import _SIZES, bind_nulls_at_once
from guard.audit._store import RecordRefusedError
from tests.guard.audit.conftest import make_event, row_of


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'audit.db'}")
    yield opened
    opened.close()


def test_a_batch_is_stored_whole_through_statements_of_the_fixed_sizes(store: Store) -> None:
    count = 1024 + 256 + 64 + 16 * 3 + 4 + 3  # every size, and more than one of some
    rows = [row_of(make_event(EventKind.DECISION, subject_id=f"c{n % 7}", allowed=n % 3 > 0,
                              writer_id="w", seq=n + 1)) for n in range(count)]
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)  # type: ignore[attr-defined]
    store.index_records([compact(r) for r in rows], "journal-t", count)
    inserts = [s for s in statements if s.startswith("INSERT INTO audit_event")]
    sizes = [s.count("), (") + 1 for s in inserts]
    assert sizes == [1024, 256, 64, 16, 16, 16, 4, 1, 1, 1]
    assert set(sizes) <= set(_SIZES)
    stored = store.rows("SELECT * FROM audit_event ORDER BY seq")
    assert [tuple(r) for r in stored] == [tuple(r) for r in rows]
    assert store.rows("SELECT sum(decisions) FROM audit_hour") == [
        (sum(1 for r in rows if r[1] == "decision"),)]


FULL = {"party_type": "internal", "country": "GB", "allowed": True, "subject_id": "c1",
        "http_method": "GET", "http_route": "/r/{id}", "http_status": 200,
        "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
        "latency_us": 40, "decision_ref": "01a2-ref", "detail": "d"}
NULLABLE = [name if name != "subject_id" else "subject" for name in FULL]
"""The columns of ``audit_event`` that may hold null."""


def shared_by(store: Store, rows: list[Row]) -> set[tuple[str, ...]]:
    """Insert ``rows`` as the index does; the columns each statement bound once."""
    shared: set[tuple[int, ...]] = set()

    def statement(size: int, once: tuple[int, ...]) -> str:
        shared.add(once)
        return _sqlite._insert_many(size, once)

    conn = store._conn  # type: ignore[attr-defined]
    conn.execute("BEGIN")
    assert _sqlite.insert_rows(conn, decode_many([compact(r) for r in rows])[0],
                               statement) == len(rows)
    conn.execute("COMMIT")
    return {tuple(FIELD_NAMES[at] for at in once) for once in shared}


def rows_with(nulls: list[set[str]], seq: int = 1, **fields: Any) -> list[Row]:
    """Decisions from ``seq`` on, one a set of ``nulls``: the nullable columns null in it."""
    return [row_of(make_event(EventKind.DECISION, writer_id="w", seq=seq + n, **{
        k: v for k, v in (FULL | fields).items()
        if (k if k != "subject_id" else "subject") not in null}))
        for n, null in enumerate(nulls)]


def stored(store: Store) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in store.rows("SELECT * FROM audit_event ORDER BY seq")]


def test_a_text_or_null_in_every_row_is_bound_once(store: Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sqlite, "_SHARED", [()])
    rows = rows_with([{"trace_id", "span_id", "detail"}] * 40 + [{"trace_id", "span_id"}] * 40)
    rows = [(*r[:14], f"subject-{n}", *r[15:]) for n, r in enumerate(rows)]
    assert shared_by(store, rows) == {tuple(
        name for name in FIELD_NAMES if name not in (  # each row's own, or an int
            "event_id", "ts", "allowed", "subject", "http_status", "latency_us", "detail",
            "seq", "prev_hash", "hash"))}
    assert stored(store) == rows


def test_a_batch_of_a_few_rows_makes_no_new_set(store: Store,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sqlite, "_SHARED", [()])
    assert shared_by(store, rows_with([set()] * 63)) == {()}
    assert shared_by(store, rows_with([set()] * 64, seq=64)) != {()}
    assert len(stored(store)) == 127


def test_few_sets_of_columns_are_ever_bound_once(store: Store,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Each set is six statements to prepare and keep (2.3 MB for 1,024 rows): past four,
    a batch binds once the largest set bound once before that it holds."""
    monkeypatch.setattr(_sqlite, "_SHARED", [()])
    made: set[tuple[str, ...]] = set()
    for n, name in enumerate(NULLABLE):  # each batch: another column varies, another is null
        rows = rows_with([{name}] * 64, seq=64 * n + 1)
        rows = [(*r[:n + 3], f"v{i}", *r[n + 4:]) if n + 3 not in (9, 17) else r
                for i, r in enumerate(rows)]
        made |= shared_by(store, rows)
    assert len(made) == len(_sqlite._SHARED) == 5
    assert len(stored(store)) == 64 * len(NULLABLE)


def varying(name: str) -> list[Any]:
    """A batch of 64 decisions (:func:`decode_many`'s values) in which one column differs
    from row to row and the others are the same."""
    at = FIELD_NAMES.index(name)
    return decode_many([compact((*r[:at], f"v{n}", *r[at + 1:]))
                        for n, r in enumerate(rows_with([set()] * 64))])[0]


class _CountedTogether(list[tuple[int, ...]]):
    """The sets bound once, whose first count in each of two threads returns only when both
    have counted (each then finds a place for its new set, as two indexers may)."""

    def __init__(self, sets: list[tuple[int, ...]]) -> None:
        super().__init__(sets)
        self._both = threading.Barrier(2, timeout=10)
        self._counted = {threading.get_ident()}  # the test's own thread is not held

    def __len__(self) -> int:
        count = super().__len__()
        if threading.get_ident() not in self._counted:
            self._counted.add(threading.get_ident())
            self._both.wait()
        return count


@pytest.mark.parametrize("alike", [True, False], ids=["one-new-set", "two-for-the-last-place"])
def test_two_indexers_finding_new_sets_at_once_add_each_once_and_no_more_than_five(
        monkeypatch: pytest.MonkeyPatch, alike: bool) -> None:
    """The sets are the process's: two stores' indexing threads that count them at once
    (both find a place) add one set once, and a fifth set only, not a sixth."""
    sets = _CountedTogether([()] + [(at,) for at in _sqlite._ONCE[:0 if alike else 3]])
    monkeypatch.setattr(_sqlite, "_SHARED", sets)
    batches = [varying(name) for name in (["detail"] * 2 if alike else ["detail", "country"])]
    found: list[tuple[int, ...]] = []
    threads = [threading.Thread(target=lambda v=values: found.append(_sqlite._bound_once(v, 64)))
               for values in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 2
    assert len(sets) == len(set(sets)) == (2 if alike else 5)
    assert set(found) <= set(sets)


TEXT = st.sampled_from(["a", "b", "", "é", "a\u0000"])


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sets(st.sampled_from(NULLABLE)), TEXT, TEXT), min_size=1,
                max_size=90), st.sets(st.sampled_from(NULLABLE)))
def test_every_row_is_stored_exactly_whichever_values_repeat(
        tmp_path: Path, drawn: list[tuple[set[str], str, str]], everywhere: set[str]) -> None:
    store = open_store(f"sqlite:///{tmp_path / f'{new_event_id()}.db'}")
    try:
        rows = [row_of(make_event(EventKind.DECISION, writer_id="w", seq=n + 1, caller=caller,
                                  purpose=purpose, **{
            k: v for k, v in FULL.items()
            if (k if k != "subject_id" else "subject") not in null | everywhere}))
            for n, (null, caller, purpose) in enumerate(drawn)]
        store.index_records([compact(r) for r in rows], "journal-t", len(rows))
        assert stored(store) == [tuple(r) for r in rows]
    finally:
        store.close()


def test_null_columns_are_bound_as_sql_nulls_through_the_adapter_for_none(
        store: Store) -> None:
    key = (type(None), sqlite3.PrepareProtocol)
    before = sqlite3.adapters.get(key)
    bind_nulls_at_once()  # as the index's own processes do (for this test only: the
    try:  # adapter is the process's, and the other tests' stores run as a service's)
        assert sqlite3.adapters[key](None) is None
        event = make_event(EventKind.DECISION, writer_id="w", seq=1)
        store.index_records([compact(row_of(event))], "journal-t", 1)
        assert store.rows("SELECT typeof(trace_id), typeof(decision_ref), typeof(detail), "
                          "typeof(country) FROM audit_event") == [("null",) * 4]
    finally:
        if before is None:
            del sqlite3.adapters[key]
        else:
            sqlite3.adapters[key] = before


def test_a_service_process_keeps_its_own_adapters(tmp_path: Path) -> None:
    """The adapter is the process's: the store sets none (the service's own for None stays,
    and a process with none gets none); the index's child process sets it."""
    script = (
        "import sqlite3, sys\n"
        "from guard.audit import EventKind, open_store\n"
        "from guard.audit._fields import compact\n"
        "from tests.guard.audit.conftest import make_event, row_of\n"
        "key = (type(None), sqlite3.PrepareProtocol)\n"
        "store = open_store(sys.argv[1])\n"
        "row = row_of(make_event(EventKind.DECISION, writer_id='w', seq=1))\n"
        "store.index_records([compact(row)], 'j', 1)\n"
        "assert key not in sqlite3.adapters, sqlite3.adapters\n"
        "mine = lambda value: value\n"
        "sqlite3.register_adapter(type(None), mine)\n"
        "open_store(sys.argv[1]).rows('SELECT 1')\n"
        "assert sqlite3.adapters[key] is mine\n"
    )
    done = subprocess.run([sys.executable, "-c", script, f"sqlite:///{tmp_path / 'a.db'}"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_a_closed_store_is_no_record_refused(tmp_path: Path) -> None:
    """A value the store cannot bind is the record's fault; a closed store is not (the
    indexer stops a lane at a refused record, and retries a store that cannot write)."""
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    row = list(row_of(make_event(EventKind.DECISION, writer_id="w", seq=1)))
    row[3] = {"caller": "an object"}  # no column holds one
    with pytest.raises(RecordRefusedError, match="Error binding parameter"):
        store.index_records([orjson.dumps(row)], "j", 1)
    store.close()
    with pytest.raises(AuditUnavailableError) as raised:
        store.index_records([compact(row_of(make_event(EventKind.DECISION)))], "j", 1)
    assert not isinstance(raised.value, RecordRefusedError)


def test_a_batch_of_checkpoints_alone_is_stored(store: Store) -> None:
    cp = Checkpoint("cp-1", "w", 0, "0" * 64, "2026-12-01T00:00:00Z", CheckpointKind.OPEN,
                    "key", "sig", None)
    store.index_records([checkpoint_record(cp)], "journal-t", 1)
    assert store.rows("SELECT checkpoint_id FROM audit_checkpoint") == [("cp-1",)]
