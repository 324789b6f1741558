"""Group commit: one thread links queued events into the chain and commits them together."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard._errors import AuditUnavailableError
from guard.audit._checkpoint import Checkpoint, CheckpointKind, sign_checkpoint
from guard.audit._event import GENESIS_HASH, AuditEvent
from guard.audit._ids import new_event_id
from guard.audit._pipeline import utc_now
from guard.audit._schema import Row, chain_row, row_event
from guard.audit._spool import Spool
from guard.audit._store import Store

Emitter = Callable[[Sequence[AuditEvent]], None]


@dataclass(slots=True)
class _Item:
    """One queued event and how to tell its producer that it is durable."""

    event: AuditEvent
    done: threading.Lock | None = None
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    error: BaseException | None = None


_STOP = object()


def _settle(items: list[_Item]) -> None:
    """Resolve the asyncio futures of ``items`` (runs on their loop)."""
    for item in items:
        fut = item.future
        if fut is None or fut.done():
            continue
        if item.error is not None:
            fut.set_exception(item.error)
        else:
            fut.set_result(None)


class GroupCommitWriter:
    """The writer thread of one audit trail.

    Args:
        store: Where events go.
        writer_id: Prefix of this writer's chain ids (a chain is ``<writer_id>/<uuid7>``).
        signing_key: Signs checkpoints.
        checkpoint_every: Write a signed checkpoint after this many events.
        checkpoint_interval: ... or after this many seconds with unsigned events.
        spool: Where events go when the store cannot take them (None: fail).
        emitters: Called with each durable batch (e.g. OTLP log export).
        max_batch: Most events in one transaction.
        retry_interval: Seconds between attempts to replay the spool.
    """

    def __init__(
        self,
        store: Store,
        *,
        writer_id: str,
        signing_key: Ed25519PrivateKey,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        spool: Spool | None = None,
        emitters: Sequence[Emitter] = (),
        max_batch: int = 2048,
        retry_interval: float = 1.0,
    ) -> None:
        self.store = store
        self._base_id = writer_id
        self.writer_id = f"{writer_id}/{new_event_id()}"
        self.spool = spool
        self._key = signing_key
        self._every = max(1, checkpoint_every)
        self._interval = checkpoint_interval
        self._emitters = tuple(emitters)
        self._max_batch = max_batch
        self._retry_interval = retry_interval
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._seq = 0
        self._prev = GENESIS_HASH
        self._opened = False
        self._unsigned = 0
        self._last_checkpoint = time.monotonic()
        self._last_replay = 0.0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"audit-writer-{writer_id}",
                                        daemon=True)
        self._closed = False
        self._thread.start()

    # -- producers ---------------------------------------------------------------------------

    def submit(self, event: AuditEvent, timeout: float = 30.0) -> None:
        """Queue ``event`` and block until it is durable."""
        item = _Item(event, done=threading.Lock())
        assert item.done is not None
        item.done.acquire()
        self._put(item)
        if not item.done.acquire(timeout=timeout):
            raise AuditUnavailableError(f"audit writer did not confirm within {timeout:g} s")
        if item.error is not None:
            raise item.error

    async def asubmit(self, event: AuditEvent) -> None:
        """Queue ``event``; the returned awaitable resolves when it is durable."""
        loop = asyncio.get_running_loop()
        item = _Item(event, future=loop.create_future(), loop=loop)
        self._put(item)
        assert item.future is not None
        await item.future

    def _put(self, item: _Item) -> None:
        if self._closed or not self._thread.is_alive():
            raise AuditUnavailableError("the audit trail is closed")
        self._queue.put(item)

    @property
    def alive(self) -> bool:
        """True while the writer thread runs."""
        return self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, write the closing checkpoint and stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=min(1.0, self._retry_interval))
            except queue.Empty:
                first = None
            batch: list[_Item] = []
            if first is _STOP:
                stopping = True
            elif isinstance(first, _Item):
                batch.append(first)
                while len(batch) < self._max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stopping = True
                        break
                    assert isinstance(nxt, _Item)
                    batch.append(nxt)
            self._replay_if_due(force=stopping)
            if batch:
                self._commit(batch)
            if stopping:
                self._final_checkpoint()
            elif self._unsigned and time.monotonic() - self._last_checkpoint >= self._interval:
                self._checkpoint_only(CheckpointKind.PERIODIC)

    def _sign(self, kind: CheckpointKind, seq: int, hash_: str) -> Checkpoint:
        return sign_checkpoint(self._key, checkpoint_id=new_event_id(), writer_id=self.writer_id,
                               seq=seq, hash_=hash_, ts=utc_now(), kind=kind)

    def _commit(self, batch: list[_Item]) -> None:
        seq, prev = self._seq, self._prev
        rows: list[Row] = []
        try:
            for item in batch:
                seq += 1
                row = chain_row(item.event, self.writer_id, seq, prev)
                prev = row[-1]
                rows.append(row)
            checkpoints: list[Checkpoint] = []
            if not self._opened:
                checkpoints.append(self._sign(CheckpointKind.OPEN, 0, GENESIS_HASH))
            if self._unsigned + len(batch) >= self._every:
                checkpoints.append(self._sign(CheckpointKind.PERIODIC, seq, prev))
            self._persist(rows, checkpoints)
        except BaseException as exc:  # the chain does not advance; every producer hears why
            error = exc if isinstance(exc, AuditUnavailableError) else AuditUnavailableError(
                f"audit write failed: {exc}")
            self.last_error = str(error)
            for item in batch:
                item.error = error
            self._notify(batch)
            self._rotate()
            return
        self.last_error = None
        self._seq, self._prev, self._opened = seq, prev, True
        if checkpoints and checkpoints[-1].kind is CheckpointKind.PERIODIC:
            self._unsigned, self._last_checkpoint = 0, time.monotonic()
        else:
            self._unsigned += len(batch)
        self._notify(batch)
        if self._emitters:
            linked = [row_event(row) for row in rows]
            for emit in self._emitters:
                with contextlib.suppress(Exception):  # best effort; the store is the record
                    emit(linked)

    def _rotate(self) -> None:
        """Start a new chain after a failed write (the store may hold part of it or none)."""
        self.writer_id = f"{self._base_id}/{new_event_id()}"
        self._seq, self._prev, self._opened, self._unsigned = 0, GENESIS_HASH, False, 0

    def _persist(self, rows: Sequence[Row], checkpoints: Sequence[Checkpoint]) -> None:
        """Durably write to the store, or to the spool when the store is down or behind."""
        if self.spool is not None and self.spool.pending():
            self.spool.append(rows, checkpoints)
            return
        try:
            self.store.write(rows, checkpoints)
        except AuditUnavailableError:
            if self.spool is None:
                raise
            self.spool.append(rows, checkpoints)
            self._last_replay = time.monotonic()

    def _replay_if_due(self, *, force: bool = False) -> None:
        spool = self.spool
        if spool is None or not spool.pending():
            return
        now = time.monotonic()
        if not force and now - self._last_replay < self._retry_interval:
            return
        self._last_replay = now
        try:
            rows, checkpoints = spool.read()
            for start in range(0, max(len(rows), 1), 5000):
                chunk = rows[start:start + 5000]
                self.store.write(chunk, checkpoints if start == 0 else ())
            spool.clear()
        except Exception as exc:  # keep the spool; try again later
            self.last_error = str(exc)

    def _checkpoint_only(self, kind: CheckpointKind) -> bool:
        try:
            self._persist([], [self._sign(kind, self._seq, self._prev)])
        except Exception as exc:  # a missed checkpoint is retried on the next tick
            self.last_error = str(exc)
            return False
        self._unsigned, self._last_checkpoint = 0, time.monotonic()
        return True

    def _final_checkpoint(self) -> None:
        if self._opened:
            self._checkpoint_only(CheckpointKind.CLOSE)
        self._replay_if_due(force=True)

    @staticmethod
    def _notify(batch: list[_Item]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        for item in batch:
            if item.done is not None:
                item.done.release()
            elif item.loop is not None:
                by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_settle, items)
