"""The indexer: builds the query store from the journal, behind it, with a persisted offset.

A thread reads the records the journal writer made durable and adds them to the
store in one transaction per read, together with the offset after them. A crash
between two transactions reads the records after the saved offset again, so the
store never holds an event twice; at start the indexer catches up from the
saved offset (the journal's tail written before a crash). A store that refuses
is retried; the producers never wait for the index.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from guard._errors import AuditUnavailableError
from guard.audit._checkpoint import Checkpoint
from guard.audit._fields import decode
from guard.audit._health import FailureLog
from guard.audit._journal import Journal, JournalReader
from guard.audit._schema import Row

_log = logging.getLogger("guard.audit")


class IndexStore(Protocol):
    """A store the indexer can write: rows, checkpoints and the offset in one transaction."""

    def indexed_offset(self, journal: str) -> int: ...

    def index(self, rows: list[Row], checkpoints: list[Checkpoint], journal: str,
              next_offset: int) -> None: ...


class Indexer:
    """Follows a journal into a store on its own thread.

    Args:
        journal: The journal followed (its ``next_offset`` is the durable end).
        store: The query store.
        batch: Most records in one index transaction.
        retry: Seconds between attempts while the store refuses.
    """

    def __init__(self, journal: Journal, store: IndexStore, *, batch: int = 20_000,
                 retry: float = 1.0) -> None:
        self.journal = journal
        self.store = store
        self._key = journal.journal_id
        self._batch = batch
        self._retry = retry
        self.offset = store.indexed_offset(self._key)
        """Records below this offset are in the store."""
        self._reader = JournalReader(journal.folder, self.offset)
        self._cond = threading.Condition()
        self._pending: tuple[list[Row], list[Checkpoint], int] | None = None
        self._closed = False
        self._failures = FailureLog(f"audit index of {journal.folder}")
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="audit-indexer", daemon=True)
        self._thread.start()

    def wake(self, *_batch: object) -> None:
        """Tell the indexer that the journal grew (the writer calls this per batch)."""
        with self._cond:
            self._cond.notify()

    def lag(self) -> int:
        """Records durable in the journal and not yet in the store."""
        return self.journal.next_offset - self.offset

    def wait(self, offset: int, timeout: float = 30.0) -> bool:
        """Block until every record below ``offset`` is in the store; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.offset < offset:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._cond.notify()
                self._cond.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Index what is durable (within ``timeout``), then stop."""
        self.wait(self.journal.next_offset, timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._reader.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                while (not self._closed and self._pending is None
                       and self._reader.offset >= self.journal.next_offset):
                    self._cond.wait(0.5)
                if self._closed:
                    return
            try:
                self._step()
            except Exception as exc:  # the store refused: keep the batch, try again
                self.last_error = str(exc)
                self._failures.failed(str(exc))
                with self._cond:
                    self._cond.wait(self._retry)

    def _step(self) -> None:
        if self._pending is None:
            payloads = self._reader.read(self.journal.next_offset, self._batch)
            rows: list[Row] = []
            checkpoints: list[Checkpoint] = []
            for payload in payloads:
                row, checkpoint = decode(payload)
                if row is not None:
                    rows.append(row)
                elif checkpoint is not None:
                    checkpoints.append(checkpoint)
            self._pending = (rows, checkpoints, self._reader.offset)
        rows, checkpoints, end = self._pending
        try:
            self.store.index(rows, checkpoints, self._key, end)
        except AuditUnavailableError:
            raise
        if self.last_error is not None:
            self._failures.succeeded()
            self.last_error = None
        with self._cond:
            self._pending = None
            self.offset = end
            self._cond.notify_all()
