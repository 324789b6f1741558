"""Group commit: one thread links queued events into the chain and commits them together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard._errors import AuditUnavailableError
from guard.audit._checkpoint import Checkpoint, CheckpointKind, Terms, sign_checkpoint
from guard.audit._countersign import countersign_stale
from guard.audit._event import GENESIS_HASH, AuditEvent, ChainKey
from guard.audit._ids import new_event_id
from guard.audit._pipeline import ts_epoch, utc_now
from guard.audit._schema import Row, link_row, prepare_row, row_event
from guard.audit._spool import Spool
from guard.audit._store import Store
from guard.audit._witness import Witness

Emitter = Callable[[Sequence[AuditEvent]], None]
_log = logging.getLogger("guard.audit")
# A queue longer than this is committed in two halves (see GroupCommitWriter._take); below
# it, one commit's fixed cost (the fsync) outweighs the overlap that splitting gains.
_SPLIT_ABOVE = 32


@dataclass(slots=True)
class _Item:
    """One queued event and how to tell its producer that it is durable.

    A waiting thread blocks on ``done`` (held until the event is settled); a
    coroutine awaits ``future``; a posted event (no waiter) has neither. The
    leading events of :meth:`GroupCommitWriter.submit_many` have neither but
    are ``watched``: their producer reads ``error`` once the last one settles.
    """

    event: AuditEvent
    head: Row  # the content columns and digest, made on the producer's thread
    digest: str
    done: threading.Lock | None = None
    future: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    error: BaseException | None = None
    settled: bool = False
    watched: bool = False
    wakes: deque[threading.Lock] | None = None  # the waiters of its batch still asleep


def _item(event: AuditEvent, key: ChainKey | None, **state: Any) -> _Item:
    """Queue entry for ``event``, its row prepared here, on the producer's thread."""
    try:
        head, digest = prepare_row(event, key)
    except Exception as exc:  # only this event is unrecordable: fail its producer alone
        raise AuditUnavailableError(f"audit event cannot be recorded: {exc}") from exc
    return _Item(event, head, digest, **state)


@dataclass(slots=True)
class _Orphan:
    """A chain abandoned on a failed write: its committed head and the failed batch's links."""

    writer_id: str
    opened: bool
    seq: int
    prev: str
    tried: dict[int, str]


def _wake_next(wakes: deque[threading.Lock] | None) -> None:
    """Wake the next waiting producer of a settled batch (each wakes the one after it)."""
    if wakes:
        with contextlib.suppress(IndexError):  # another thread took the last one
            wakes.popleft().release()


def _wake_all(wakes: deque[threading.Lock]) -> None:
    """Wake every producer of a batch that the chain has not reached yet."""
    while wakes:
        _wake_next(wakes)


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
    """Links queued events into one hash chain and commits them in shared transactions.

    One thread at a time holds the *turn* and commits what is queued (half of a
    long queue, see :meth:`_take`) in one transaction. A thread calling
    :meth:`submit` takes the turn itself when no commit is in progress (no
    hand-off to another thread), else it waits; when a commit ends with more
    queued, the turn goes to the writer thread, which keeps committing batches
    while events keep arriving (coroutines, from :meth:`asubmit`, always go
    through it: an event loop never commits). Posted events (:meth:`post`) ride
    along with the next commit someone waits on, or the writer thread commits
    them after ``post_delay``. The writer thread also writes periodic
    checkpoints and replays the spool.

    Producers digest their events before queueing (:func:`prepare_row`) and wake
    each other once their batch is settled, so the turn holder only links, binds
    and commits.

    Args:
        store: Where events go.
        writer_id: Prefix of this writer's chain ids (a chain is ``<writer_id>/<uuid7>``).
        signing_key: Signs checkpoints.
        checkpoint_every: Sign a checkpoint at least every this many events (at the exact
            event, even inside a batch).
        checkpoint_interval: ... and within this many seconds of the first unsigned event.
        chain_key: Keys each event's content digest (chain format 3); None: format 2.
        witness: Where every checkpoint committed to the store is also appended.
        spool: Where events go when the store cannot take them (None: fail).
        emitters: Called with each durable batch (e.g. OTLP log export).
        max_batch: Most events in one transaction.
        retry_interval: Seconds between attempts to replay the spool.
        post_delay: Seconds a posted event may wait for a commit that someone waits
            on, before the writer thread commits it on its own.
    """

    def __init__(
        self,
        store: Store,
        *,
        writer_id: str,
        signing_key: Ed25519PrivateKey,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        chain_key: ChainKey | None = None,
        witness: Witness | None = None,
        spool: Spool | None = None,
        emitters: Sequence[Emitter] = (),
        max_batch: int = 2048,
        retry_interval: float = 1.0,
        post_delay: float = 0.005,
    ) -> None:
        self.store = store
        self._base_id = writer_id
        self.writer_id = f"{writer_id}/{new_event_id()}"
        self.spool = spool
        self._key = signing_key
        self._every = max(1, checkpoint_every)
        self._interval = checkpoint_interval
        self._chain_key = chain_key
        self._terms = Terms(3 if chain_key is not None else 2, self._every, checkpoint_interval)
        self._witness = witness
        self._orphans: list[_Orphan] = []  # chains abandoned on a failed write, to close
        self._last_orphan_try = 0.0
        self._last_sweep = 0.0  # the last look for stopped writers' tails to countersign
        self._emitters = tuple(emitters)
        self._max_batch = max_batch
        self._retry_interval = retry_interval
        self._post_delay = post_delay
        self._post_due = float("inf")  # when the oldest queued posted event must go
        self._waited = 0  # queued events someone waits on (a thread or a coroutine)
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the writer thread waits on this one
        self._flushed = threading.Condition(lock)  # flush() waits on this one
        self._queued = 0  # events queued so far ...
        self._settled = 0  # ... and settled (written or failed), in queue order
        self._flushing = 0
        self._pending: deque[_Item] = deque()
        self._rest = 0  # events left queued by a split batch: the next batch (see _take)
        self._asleep: deque[deque[threading.Lock]] = deque()  # batches still being woken
        self._busy = False  # someone holds the turn
        self._writer_turn = False  # ... and it was handed to the writer thread
        self._seq = 0
        self._prev = GENESIS_HASH
        self._opened = False
        self._unsigned = 0
        self._unsigned_since = 0.0  # the time (epoch s) of the first unsigned event
        self._last_replay = 0.0
        self.last_error: str | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"audit-writer-{writer_id}",
                                        daemon=True)
        self._thread.start()

    # -- producers ---------------------------------------------------------------------------

    def submit(self, event: AuditEvent, timeout: float = 30.0) -> None:
        """Queue ``event`` and block until it is durable (committing it here if no one is)."""
        item = _item(event, self._chain_key)
        self._queue_and_wait([item], timeout)
        if item.error is not None:
            raise item.error
        if not item.settled:  # fail closed, whatever went wrong
            raise AuditUnavailableError("audit writer lost track of an event")

    def submit_many(
        self, events: Sequence[AuditEvent], timeout: float = 30.0
    ) -> list[BaseException | None]:
        """Queue ``events`` in order and block until all are settled.

        Returns, per event, ``None`` (durable) or the error that kept it out.
        The queue is committed in order, so once the last event is settled all
        of them are.
        """
        if not events:
            return []
        items = [_item(event, self._chain_key, watched=True) for event in events]
        self._queue_and_wait(items, timeout)
        lost = AuditUnavailableError("audit writer lost track of an event")
        return [item.error if item.settled else lost for item in items]

    def _queue_and_wait(self, items: list[_Item], timeout: float) -> None:
        """Queue ``items``; block until the last is settled, committing here if no one is."""
        own = items[-1]
        done = own.done = threading.Lock()
        done.acquire()
        with self._cond:
            self._check_open()
            self._pending.extend(items)
            self._queued += len(items)
            self._waited += 1
            lead = not self._busy
            self._busy = True
        try:
            if not lead and not done.acquire(timeout=timeout) and not own.settled:
                # Still queued or being written: it may yet be committed; no one will hear.
                raise AuditUnavailableError(f"audit writer did not confirm within {timeout:g} s")
            if lead:
                self._lead(own)
        finally:
            _wake_next(own.wakes)

    async def asubmit(self, event: AuditEvent) -> None:
        """Queue ``event``; the returned awaitable resolves when it is durable."""
        loop = asyncio.get_running_loop()
        item = _item(event, self._chain_key, future=loop.create_future(), loop=loop)
        self._enqueue(item)
        assert item.future is not None
        await item.future

    def post(self, event: AuditEvent) -> None:
        """Queue ``event`` for the next commit and return at once.

        It rides along with the next commit someone waits on, or is committed by
        the writer thread within ``post_delay`` seconds. A failure to write it is
        logged (logger ``guard.audit``): no one waits to hear it.
        """
        item = _item(event, self._chain_key)
        with self._cond:
            self._check_open()
            self._pending.append(item)
            self._queued += 1
            if self._post_due == float("inf"):
                self._post_due = time.monotonic() + self._post_delay
                if not self._busy:
                    self._cond.notify()  # the writer thread sets its timer

    def _enqueue(self, item: _Item) -> None:
        """Queue an item a coroutine waits on; hand the turn to the writer thread if free."""
        with self._cond:
            self._check_open()
            self._pending.append(item)
            self._queued += 1
            self._waited += 1
            if not self._busy:
                self._busy = self._writer_turn = True
                self._cond.notify()

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every event queued before the call is settled (written, or failed).

        Raises:
            AuditUnavailableError: they were not settled within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued
            self._flushing += 1
            try:
                while self._settled < target:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self._thread.is_alive():
                        raise AuditUnavailableError(
                            f"audit writer did not flush within {timeout:g} s")
                    self._flushed.wait(remaining)
            finally:
                self._flushing -= 1

    def _check_open(self) -> None:
        if self._closed or not self._thread.is_alive():
            raise AuditUnavailableError("the audit trail is closed")

    @property
    def alive(self) -> bool:
        """True while the writer thread runs."""
        return self._thread.is_alive()

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, write the closing checkpoint and stop the thread."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    # -- the turn ----------------------------------------------------------------------------

    def _take(self) -> list[_Item]:
        """The next batch: the whole queue, or the first half of a long one.

        When a queue longer than ``_SPLIT_ABOVE`` is split, the next batch is the
        rest of it: the producers woken by the first commit queue their next
        events while the second is on disk, and a long queue costs two commits.
        """
        with self._cond:
            pending = self._pending
            if self._rest:
                size, self._rest = self._rest, 0
            else:
                size = len(pending)
                if size > _SPLIT_ABOVE:
                    half = max(_SPLIT_ABOVE, (size + 1) // 2)
                    size, self._rest = half, size - half
            batch = [pending.popleft()
                     for _ in range(min(size, len(pending), self._max_batch))]
            self._waited -= sum(1 for item in batch
                                if item.done is not None or item.future is not None)
            if not pending:
                self._post_due = float("inf")
            return batch

    def _lead(self, own: _Item) -> None:
        """Holding the turn: commit queued batches until ``own`` is settled, then pass it on."""
        try:
            while not own.settled:
                batch = self._take()
                if not batch:  # cannot happen: own is queued until settled
                    break
                self._replay_if_due()
                self._commit(batch)
        finally:
            self._pass_turn()

    def _pass_turn(self) -> None:
        """Hand the turn to the writer thread if anything is queued, else free it."""
        with self._cond:
            if not self._pending:
                self._busy = False
                if self._closed:
                    self._cond.notify()
                return
            if not self._waited and not self._closed:  # posted events only: they can wait
                self._busy = False
                self._cond.notify()
                return
            # More is queued: the writer thread commits it, and keeps committing while
            # events keep arriving (no hop of the turn from thread to thread).
            self._writer_turn = True
            self._cond.notify()

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        tick = min(1.0, self._retry_interval)
        while True:
            with self._cond:
                while not self._writer_turn:
                    now = time.monotonic()
                    if not self._busy and (self._closed or now >= self._post_due
                                           or self._housekeeping_due()):
                        self._busy = True  # take the free turn
                        break
                    self._wake_stragglers()
                    self._cond.wait(min(tick, max(0.0, self._post_due - now)))
                self._writer_turn = False
                closing = self._closed
            try:
                batch = self._take()
                self._replay_if_due(force=closing)
                if batch:
                    self._commit(batch)
                if closing and not self._pending:
                    self._final_checkpoint()
                    with self._cond:
                        self._busy = False
                    return
                if self._unsigned and self._checkpoint_due():
                    self._checkpoint_only(CheckpointKind.PERIODIC)
                if self._orphans and self._orphans_due():
                    self._close_orphans()
                if self._sweep_due():
                    self._countersign()
            except Exception as exc:  # keep the thread; the batch's producers heard why
                self.last_error = str(exc)
            finally:
                if not (closing and not self._busy):
                    self._pass_turn()

    def _checkpoint_due(self) -> bool:
        """The first unsigned event was made ``checkpoint_interval`` seconds ago (or more)."""
        return time.time() - self._unsigned_since >= self._interval

    def _housekeeping_due(self) -> bool:
        """A checkpoint, a spool replay or closing an abandoned chain is due (turn free)."""
        if self._unsigned and self._checkpoint_due():
            return True
        if (self._orphans and self._orphans_due()) or self._sweep_due():
            return True
        spool = self.spool
        return (spool is not None and spool.pending()
                and time.monotonic() - self._last_replay >= self._retry_interval)

    def _sign(self, kind: CheckpointKind, seq: int, hash_: str,
              writer_id: str | None = None, terms: Terms | None = None) -> Checkpoint:
        return sign_checkpoint(self._key, checkpoint_id=new_event_id(),
                               writer_id=writer_id or self.writer_id, seq=seq, hash_=hash_,
                               ts=utc_now(), kind=kind, terms=terms or self._terms)

    def _sweep_due(self) -> bool:
        """Time to look for stopped writers' unsigned tails (keyed trails, every interval)."""
        return (self._chain_key is not None
                and time.monotonic() - self._last_sweep >= max(1.0, self._interval))

    def _countersign(self) -> None:
        """Countersign the stale unsigned tails of chains whose writers stopped."""
        self._last_sweep = time.monotonic()
        key = self._chain_key
        if key is None:
            return
        try:
            written = countersign_stale(
                self.store, self._key.public_key(), key, self.writer_id,
                lambda writer, seq, hash_, terms: self._sign(
                    CheckpointKind.COUNTERSIGN, seq, hash_, writer, terms))
        except Exception as exc:  # the store is down or odd: try again next interval
            _log.debug("countersigning stopped writers' chains failed: %s", exc)
            return
        self._witnessed(written)

    def _commit(self, batch: list[_Item]) -> None:
        seq, prev, writer_id = self._seq, self._prev, self.writer_id
        keyed = self._chain_key is not None
        rows: list[Row] = []
        try:
            checkpoints: list[Checkpoint] = []
            if not self._opened:
                checkpoints.append(self._sign(CheckpointKind.OPEN, 0, GENESIS_HASH))
            unsigned, every = self._unsigned, self._every
            if unsigned and self._checkpoint_due():  # the stretch ends before this batch
                checkpoints.append(self._sign(CheckpointKind.PERIODIC, seq, prev))
                unsigned = 0
            for item in batch:
                seq += 1
                row = link_row(item.head, item.digest, writer_id, seq, prev, keyed=keyed)
                prev = row[-1]
                rows.append(row)
                unsigned += 1
                if unsigned >= every:  # signed at the exact event: no stretch exceeds `every`
                    checkpoints.append(self._sign(CheckpointKind.PERIODIC, seq, prev))
                    unsigned = 0
            stored = self._persist(rows, checkpoints)
        except BaseException as exc:  # the chain does not advance; every producer hears why
            error = exc if isinstance(exc, AuditUnavailableError) else AuditUnavailableError(
                f"audit write failed: {exc}")
            self.last_error = str(error)
            for item in batch:
                item.error = error
                if item.done is None and item.future is None and not item.watched:
                    _log.error("audit event %s (%s) was not recorded: %s",
                               item.event.event_id, item.event.kind.value, error)
            self._notify(batch)
            self._rotate([(int(r[-3]), str(r[-1])) for r in rows])
            return
        self.last_error = None
        self._seq, self._prev, self._opened = seq, prev, True
        if unsigned and (not self._unsigned or any(
                cp.kind is CheckpointKind.PERIODIC for cp in checkpoints)):
            # A new unsigned stretch starts: its clock runs from its first event's time.
            self._unsigned_since = ts_epoch(batch[len(batch) - unsigned].event.ts)
        self._unsigned = unsigned
        self._notify(batch)
        if stored:
            self._witnessed(checkpoints)
            if self._orphans:
                self._close_orphans()
        if self._emitters:
            linked = [row_event(row) for row in rows]
            for emit in self._emitters:
                with contextlib.suppress(Exception):  # best effort; the store is the record
                    emit(linked)

    def _rotate(self, tried: list[tuple[int, str]]) -> None:
        """Start a new chain after a failed write (the store may hold part of it or none).

        The abandoned chain is closed with a signed checkpoint once the store takes
        writes again (:meth:`_close_orphans`), so it is not left unsigned for good.
        """
        self._orphans.append(_Orphan(self.writer_id, self._opened, self._seq, self._prev,
                                     dict(tried)))
        self.writer_id = f"{self._base_id}/{new_event_id()}"
        self._seq, self._prev, self._opened, self._unsigned = 0, GENESIS_HASH, False, 0

    def _orphans_due(self) -> bool:
        return time.monotonic() - self._last_orphan_try >= self._retry_interval

    def _close_orphans(self) -> None:
        """Close the chains abandoned on failed writes at the head the store holds.

        The store's newest event of the chain is signed only when it is one this
        writer linked: the last committed event, or the last event of the failed
        batch (whose commit may have reached the store before the link broke).
        """
        self._last_orphan_try = time.monotonic()
        while self._orphans:
            orphan = self._orphans[0]
            try:
                found = self.store.rows(
                    "SELECT seq, hash FROM audit_event WHERE writer_id = ? "
                    "ORDER BY seq DESC LIMIT 1", (orphan.writer_id,))
                seq, hash_ = orphan.seq, orphan.prev
                if found:
                    top, top_hash = int(found[0][0]), str(found[0][1])
                    if orphan.tried.get(top) == top_hash:
                        seq, hash_ = top, top_hash
                elif not orphan.opened:
                    self._orphans.pop(0)  # nothing of it reached the store
                    continue
                checkpoint = self._sign(CheckpointKind.CLOSE, seq, hash_, orphan.writer_id)
                self.store.write([], [checkpoint])
            except Exception as exc:  # the store is still down: try again later
                self.last_error = str(exc)
                return
            self._orphans.pop(0)
            self._witnessed([checkpoint])

    def _witnessed(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Publish checkpoints durable in the audit to the witness, if there is one."""
        if self._witness is not None:
            self._witness.publish(checkpoints)

    def _persist(self, rows: Sequence[Row], checkpoints: Sequence[Checkpoint]) -> bool:
        """Durably write to the store, or to the spool when the store is down or behind.

        Returns True when the store took them, False when the spool did.
        """
        if self.spool is not None and self.spool.pending():
            self.spool.append(rows, checkpoints)
            return False
        try:
            self.store.write(rows, checkpoints)
        except AuditUnavailableError:
            if self.spool is None:
                raise
            self.spool.append(rows, checkpoints)
            self._last_replay = time.monotonic()
            return False
        return True

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
            return
        self._witnessed(checkpoints)

    def _checkpoint_only(self, kind: CheckpointKind) -> bool:
        try:
            checkpoint = self._sign(kind, self._seq, self._prev)
            stored = self._persist([], [checkpoint])
        except Exception as exc:  # a missed checkpoint is retried on the next tick
            self.last_error = str(exc)
            return False
        self._unsigned = 0
        if stored:
            self._witnessed([checkpoint])
        return True

    def _final_checkpoint(self) -> None:
        if self._opened:
            self._checkpoint_only(CheckpointKind.CLOSE)
        self._replay_if_due(force=True)
        if self._orphans:
            self._close_orphans()
        if self._witness is not None:
            with contextlib.suppress(OSError):
                self._witness.close()

    def _wake_stragglers(self) -> None:
        """Wake the producers of earlier batches that their chain has not reached yet.

        Each woken producer wakes the next one (:func:`_wake_next`), so the thread
        that committed does not pay a wake-up per event; this catches a chain that
        stalled (a producer that gave up waiting before its event was settled).
        """
        asleep = self._asleep
        with contextlib.suppress(IndexError):  # the writer thread and a leader may both drain
            while asleep:
                _wake_all(asleep.popleft())

    def _notify(self, batch: list[_Item]) -> None:
        with self._cond:
            self._settled += len(batch)
            if self._flushing:
                self._flushed.notify_all()
        self._wake_stragglers()
        wakes: deque[threading.Lock] = deque()
        by_loop: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        for item in batch:
            item.settled = True
            if item.done is not None:
                item.wakes = wakes
                wakes.append(item.done)
            elif item.loop is not None:
                by_loop.setdefault(item.loop, []).append(item)
        if wakes:
            self._asleep.append(wakes)
            _wake_next(wakes)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_settle, items)
