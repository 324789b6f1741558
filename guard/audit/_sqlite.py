"""The SQLite audit store: WAL, one write connection (the index's)."""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from guard._errors import AuditUnavailableError
from guard.audit._event import FIELD_NAMES
from guard.audit._fields import decode_many
from guard.audit._schema import (
    ADD_SUBJECTS,
    INSERT_CHECKPOINT,
    SAVE_OFFSET,
    SCHEMA_VERSION,
    checkpoint_row,
    migrate,
)
from guard.audit._store import AuditStoreError, RecordRefusedError
from guard.audit._summary import ADD_COUNTED, add_hours, count_hours, counted

_SIZES = (1024, 256, 64, 16, 4, 1)  # 27 columns x 1024 stays under SQLite's 32766 variables
_WIDTH = len(FIELD_NAMES)
_ONCE = tuple(at for at, name in enumerate(FIELD_NAMES)
              if name not in ("event_id", "ts", "seq", "prev_hash", "hash"))
"""The columns that may hold one value in every row of a batch (the others are each row's)."""
_ADD_HOURS = add_hours("audit_event e", "e.rowid > ? AND ")
_LAST_ROWID = (1 << 63) - 1
_REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, OverflowError)
"""A record the store cannot hold (a null where none may be, an int past 64 bits, a chain
place taken; a list: its binding's error), not a store that cannot write (nor a closed one).

A value of a type the ``sqlite3`` module cannot bind is told by its message, "Error binding
parameter ...": the module raises it as a ProgrammingError with no SQLite error code
(``sqlite_errorcode`` is set only on SQLite's own errors), as it does for a closed
connection, which is no record's fault (``test_a_closed_store_is_no_record_refused``)."""


def bind_nulls_at_once() -> None:
    """Bind None through an adapter (a C call returning it) the sqlite3 module finds at once.

    Without one, the module's adapter protocol formats two failed look-ups per null
    value (about 2,000 instructions; a decision has several null columns). Adapters
    are the whole process's, so only the index's own processes set it (the service's
    child, ``guard audit index``): a service's own adapter for None is not replaced.
    """
    nothing: dict[None, None] = {}
    sqlite3.register_adapter(type(None), nothing.get)


_SHARED: list[tuple[int, ...]] = [()]
"""The sets of columns bound once a statement so far (a prepared statement of 1,024 rows
holds 2.3 MB: at most :data:`_KINDS` sets, six statements each, are ever made)."""
_KINDS = 5
_SHARING = threading.Lock()
"""Held to add a set: two indexers' threads may find the same new set, or the last place."""


@functools.lru_cache(maxsize=_KINDS * len(_SIZES))
def _insert_many(count: int, shared: tuple[int, ...] = ()) -> str:
    """One INSERT for ``count`` rows (one statement step, so the GIL is released once); the
    columns ``shared`` (indexes in ``FIELD_NAMES``) take one value for every row: the
    statement's first parameters, ``?1`` on, then each row's own values in order."""
    own = [name for at, name in enumerate(FIELD_NAMES) if at not in shared]
    row = "(" + "".join(f"?{n + 1}, " for n in range(len(shared))) + ", ".join("?" * len(own)) + ")"
    columns = ", ".join([FIELD_NAMES[at] for at in shared] + own)
    return (f"INSERT INTO audit_event ({columns}) VALUES "  # noqa: S608 - constant SQL
            f"{', '.join([row] * count)} ON CONFLICT (event_id) DO NOTHING")


def _bound_once(values: list[Any], count: int) -> tuple[int, ...]:
    """The columns to bind once for all ``count`` rows of ``values``, among those holding one
    text (or null) in every row: all of them if that set was bound once before or fewer
    sets were, else the largest set bound once before that they hold."""
    last = (count - 1) * _WIDTH
    same = tuple(at for at in _ONCE if ((first := values[at]) is None or type(first) is str)
                 and values[at + last] == first and values[at::_WIDTH].count(first) == count)
    if same in _SHARED:
        return same
    if len(_SHARED) < _KINDS and count >= _SIZES[2]:  # a batch of a few rows makes no new set
        with _SHARING:  # looked at again: another thread may have added it, or the last set
            if same not in _SHARED and len(_SHARED) < _KINDS:
                _SHARED.append(same)
            if same in _SHARED:
                return same
    return max((known for known in _SHARED if set(known) <= set(same)), key=len)


def insert_rows(conn: sqlite3.Connection, values: list[Any],
                statement: Callable[[int, tuple[int, ...]], str] = _insert_many) -> int:
    """Insert events (:func:`decode_many`'s values) in statements of :data:`_SIZES` rows,
    largest first; how many were stored (a row already stored is not).

    A few sizes, so each statement is compiled once per connection (one of 500 rows
    takes SQLite about 1.3 M instructions to prepare) rather than once per batch size.
    A column holding one text or null in every row (the writer, the policy version, the
    caller, a trace id that is never there...) is bound once a statement: the
    ``sqlite3`` module binds each value through about 800 instructions (a null through
    an adapter look-up, 1,200), where checking the column costs about 230 a row.
    """
    count = len(values) // _WIDTH
    shared = _bound_once(values, count) if count else ()
    once = [values[at] for at in shared]
    width = _WIDTH
    if shared:
        values = values[:]  # the caller's stay whole
        for at in reversed(shared):  # the rows' later columns first: the earlier keep their place
            del values[at::width]
            width -= 1
    start = stored = 0
    for size in _SIZES:
        while count - start >= size:
            stored += conn.execute(statement(size, shared),
                                   once + values[start * width:(start + size) * width]).rowcount
            start += size
    return stored


def _insert(conn: sqlite3.Connection, records: Sequence[bytes], offset: tuple[str, int]) -> None:
    """Decode and insert records (:func:`insert_rows`) a chunk at a time, add the rows inserted
    to the subject index and their decisions to the hourly summary, and save the journal
    offset (in the caller's transaction).

    A chunk's rows are inserted before the next is decoded, so few are alive at a time
    (decoded whole, 5,000 records took 6 % more instructions a record), and each chunk's
    INSERT gives up the interpreter lock while SQLite runs it: a journal writer in the
    same process (a test's, a bench's) returns from its ``fdatasync`` wanting it. The
    rows inserted are those after the table's largest ``rowid`` before: a row already
    stored (``ON CONFLICT DO NOTHING``) gets none, and its batch's decisions are then
    counted in SQL from the rows inserted, not from the records.
    """
    before = conn.execute("SELECT coalesce(max(rowid), 0) FROM audit_event").fetchone()[0]
    events = stored = 0
    hours: Counter[tuple[Any, ...]] | None = Counter()
    checkpoints = []
    for start in range(0, len(records), _SIZES[0]):
        values, found = decode_many(records[start:start + _SIZES[0]])
        checkpoints += found
        events += len(values) // _WIDTH
        stored += insert_rows(conn, values)
        if hours is not None:
            try:
                count_hours(hours, values)
            except TypeError:  # a ts that is not text (a forged record's): counted in SQL
                hours = None
    if stored:
        conn.execute(ADD_SUBJECTS, (before, _LAST_ROWID))
        if hours is not None and stored == events:
            conn.executemany(ADD_COUNTED, counted(hours))
        else:
            conn.execute(_ADD_HOURS, (before,))
    if checkpoints:
        conn.executemany(INSERT_CHECKPOINT, [checkpoint_row(c) for c in checkpoints])
    conn.execute(SAVE_OFFSET, offset)


class SqliteStore:
    """An audit store in one SQLite file, created on first use; opening migrates its schema
    (``create`` and ``timeout`` as :func:`~guard.audit.open_store` takes them)."""

    def __init__(self, path: Path, *, create: bool = True, timeout: float = 5.0) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._timeout = timeout
        if not create and not path.is_file():
            raise AuditStoreError(f"no audit store at {path} (pass --store or record a decision)")
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # the owner's alone, as the journal;
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # WAL too
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        try:
            self._conn = self._connect()
            # The journal is the durable record, so the index commits without waiting for
            # the disk: a crash loses whole transactions, offset included, and they are read
            # from the journal again. Index batches are large: keep the B-trees' pages in
            # memory and fold the WAL into the database less often (each time is a sync).
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-32768",
                           "wal_autocheckpoint=8192"):
                self._conn.execute(f"PRAGMA {pragma}")
            self._read = self._connect()
            version = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone()
            if version:
                version = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
            elif not create:
                raise AuditStoreError(f"{path} is not an audit store (no schema_version table)")
            if not version or (version[0] or 0) < SCHEMA_VERSION:
                with self._lock:
                    self._transaction(lambda conn: migrate(conn.execute))
        except sqlite3.Error as exc:
            raise AuditStoreError(f"cannot open audit store {path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False,
            cached_statements=256,
        )

    def _transaction(self, body: Callable[[sqlite3.Connection], object]) -> None:
        """Run ``body`` on the write connection in one write transaction (lock held)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def index_records(self, records: Sequence[bytes], journal: str, next_offset: int) -> None:
        """Add journal records (decoded here, :func:`_insert`) and save the offset, in one
        transaction.

        (Building the rows in SQLite from the records' JSON, ``json_each``, costs
        twice the CPU of decoding them here: ``bench/index_cost.py``.)

        Raises:
            ValueError: a record is not a journal record (nothing is added).
        """
        with self._lock:
            try:
                self._transaction(lambda conn: _insert(conn, records, (journal, next_offset)))
            except (sqlite3.Error, OverflowError) as exc:  # OverflowError: an int past 64 bits
                refused = isinstance(exc, _REFUSED) or str(exc).startswith("Error binding")
                raise (RecordRefusedError if refused else AuditUnavailableError)(
                    f"audit store {self.path} refused the index write: {exc}") from exc

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            try:
                return list(self._read.execute(sql, tuple(params)).fetchall())
            except sqlite3.Error as exc:
                raise AuditStoreError(f"audit store {self.path}: {exc}") from exc

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """Yield rows from a fresh connection (long reads do not block other readers)."""
        try:
            conn = self._connect()
        except sqlite3.Error as exc:  # the file gone or replaced since the store was opened
            raise AuditStoreError(f"audit store {self.path}: {exc}") from exc
        try:
            cursor = conn.execute(sql, tuple(params))
            while batch := cursor.fetchmany(5000):
                yield from batch
        except sqlite3.Error as exc:
            raise AuditStoreError(f"audit store {self.path}: {exc}") from exc
        finally:
            conn.close()

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._conn.close()
            self._read.close()
