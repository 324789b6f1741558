"""The indexer: builds the query store from the journal, behind it, with a persisted offset.

A thread reads the records below the journal's published durable end and adds
them to the store in one transaction per read, together with the offset after
them. It runs in the writing process (``audit.index = "inline"``) or in
``guard audit index`` (:mod:`guard.audit._follow`), which follows every lane. It
indexes on a short timer (``interval``; a backlog at once, ``batch`` records a
transaction), not per journal append, which costs the writer nothing: an index
transaction per few thousand events costs a fraction of one per append, and an
event is still queryable within ``interval`` plus one transaction. A crash
between two transactions reads the records after the saved offset again, so the
store never holds an event twice; at start the indexer catches up from the
saved offset (the journal's tail written before a crash), which it reads on its
own thread: a store that refuses, at start or later, is retried; neither the
producers nor the trail's start wait for the index.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from guard.audit._checkpoint import Checkpoint
from guard.audit._fields import decode_many
from guard.audit._health import FailureLog
from guard.audit._journal import JournalReader, durable_end
from guard.audit._schema import Row
from guard.audit._store import Store

_log = logging.getLogger("guard.audit")
_CHUNK = 1000
"""Records read and decoded at a time within one index transaction."""


class Indexer:
    """Follows a journal (one lane) into a store on its own thread.

    Args:
        lane: The journal folder followed (up to its published durable end).
        store: The query store.
        batch: Most records in one index transaction (a longer backlog: one after another).
        interval: Seconds a durable record waits at most before an index transaction starts.
        retry: Seconds between attempts while the store refuses.
    """

    def __init__(self, lane: Path, store: Store, *, batch: int = 5_000,
                 interval: float = 0.1, retry: float = 1.0) -> None:
        self.lane = lane
        self.store = store
        self._key = (lane / "ID").read_text().strip()
        self._batch = batch
        self._interval = interval
        self._retry = retry
        self.offset = 0
        """Records below this offset are in the store (once the saved offset is read)."""
        self._reader: JournalReader | None = None  # made once the saved offset is read
        self._cond = threading.Condition()
        self._pending: tuple[list[Row], list[Checkpoint], int] | None = None
        self._wanted = 0  # a waiter wants the index at least this far: index now
        self._due = 0.0  # monotonic time of the next timed transaction
        self._closed = False
        self._failures = FailureLog(f"audit index of {lane}")
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="audit-indexer", daemon=True)
        self._thread.start()

    def wait(self, offset: int, timeout: float = 30.0) -> bool:
        """Block until every record below ``offset`` is in the store; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._wanted = max(self._wanted, offset)
            while self._reader is None or self.offset < offset:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._cond.notify()
                self._cond.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float = 30.0, *, catch_up: bool = True) -> None:
        """Index what is durable (within ``timeout``; unless not ``catch_up``), then stop."""
        if catch_up:
            self.wait(durable_end(self.lane), timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._reader is not None and not self._thread.is_alive():
            self._reader.close()

    def _ready(self) -> float:
        """0 when a transaction should start now, else how long to sleep (under the lock)."""
        if self._pending is not None or self._reader is None:
            return 0.0
        waiting = durable_end(self.lane) - self._reader.offset
        if waiting <= 0:
            return self._interval
        if waiting >= self._batch or self._reader.offset < self._wanted:
            return 0.0
        return max(0.0, self._due - time.monotonic())

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (sleep := self._ready()) > 0:
                    self._cond.wait(sleep)
                if self._closed:
                    return
            try:
                self._step()
            except Exception as exc:  # the store refused: keep the batch, try again
                self.last_error = str(exc)
                self._failures.failed(str(exc))
                with self._cond:
                    self._cond.wait(self._retry)

    def _read(self) -> tuple[list[Row], list[Checkpoint]]:
        """Read and decode up to ``batch`` durable records, a chunk at a time.

        Between chunks the thread gives up the interpreter lock: the writer's
        ``fdatasync`` returns wanting it, and would otherwise wait for the
        interpreter's switch interval (5 ms) behind a long decode.
        """
        rows: list[Row] = []
        checkpoints: list[Checkpoint] = []
        reader = self._reader
        assert reader is not None
        end, left = durable_end(self.lane), self._batch
        while left > 0 and reader.offset < end:
            records = reader.read(end, min(left, _CHUNK))
            chunk_rows, chunk_checkpoints = decode_many(records)
            rows += chunk_rows
            checkpoints += chunk_checkpoints
            left -= len(records)
            time.sleep(0)
        return rows, checkpoints

    def _step(self) -> None:
        if self._reader is None:  # first: how far the store is (it may be down for now)
            offset = self.store.indexed_offset(self._key)
            reader = JournalReader(self.lane, offset)
            with self._cond:
                self._reader, self.offset = reader, offset
                self._due = time.monotonic() + self._interval  # a crash's tail: on the timer
                self._cond.notify_all()
        else:
            if self._pending is None:
                self._due = time.monotonic() + self._interval
                try:
                    rows, checkpoints = self._read()
                except Exception:  # read them again, from the saved offset: never skip one
                    self._reader.close()
                    self._reader = None
                    raise
                self._pending = (rows, checkpoints, self._reader.offset)
            rows, checkpoints, end = self._pending
            self.store.index(rows, checkpoints, self._key, end)
            with self._cond:
                self._pending = None
                self.offset = end
                self._cond.notify_all()
        if self.last_error is not None:
            self._failures.succeeded()
            self.last_error = None
