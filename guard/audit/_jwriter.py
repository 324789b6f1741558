"""The journal writer: one thread builds, links and appends each batch with one fdatasync.

Producers queue an :class:`Entry` and wait, each on a waker the writer wakes once
per batch: a thread on a lock (:class:`_Waiting`), a coroutine on a future its loop
resolves when the writer writes the loop's eventfd (:class:`_Waker`).
An event is queued without a lock and wakes the writer (a lock released) only
when it is idle. The writer
takes everything queued, builds the rows, links them into the hash chain, signs
the checkpoints that fall due, appends it all to the journal with one
``fdatasync``, releases the producers and only then hands the batch to the
listeners and its checkpoints to the witness's own thread (a witness that hangs
holds no commit). If the thread ends, every waiter fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Protocol
from weakref import finalize

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard._errors import AuditTimeoutError, AuditUnavailableError
from guard.audit._checkpoint import Checkpoint, CheckpointKind, Terms, sign_checkpoint
from guard.audit._event import GENESIS_HASH, EventKind, ts_epoch, utc_now
from guard.audit._fields import ChainKey, Linker, Pseudonyms, checkpoint_record, content
from guard.audit._health import DiskReserve, FailureLog
from guard.audit._ids import new_event_id, new_event_ids
from guard.audit._journal import GROW, Journal
from guard.audit._schema import Row
from guard.audit._witness import Witness

_log = logging.getLogger("guard.audit")

Committed = Callable[[Sequence[Row], Sequence[Checkpoint]], None]
"""Told of each durable batch (OTLP export)."""

_WAKER = attrgetter("waker")

WITNESS_BACKLOG = 10_000
"""Most checkpoints waiting for a slow witness; older ones are dropped (and logged)."""


class _Waiting:
    """A thread waiting for its events: a lock the writer releases with each batch of them."""

    __slots__ = ("_lock",)
    done = None  # (a loop's waker keeps its items done)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def wake(self) -> None:
        """A batch holding some of the events is done."""
        with contextlib.suppress(RuntimeError):  # woken already
            self._lock.release()

    def wait(self, last: Entry, timeout: float) -> bool:
        """Block until ``last`` (queued last) is done; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while last.result is None:
            if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                return False
        return True


class _Waker:
    """The items done for one event loop, and the eventfd (one of its readers) that wakes it.

    Writing it never blocks (a closed loop just never reads); it is closed with the
    waker, once no item names it, so its number is never another file's while written.
    """

    __slots__ = ("__weakref__", "done", "fd")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        finalize(self, os.close, self.fd).atexit = False
        self.done: deque[tuple[Sequence[Entry], bool]] = deque()
        """Batches holding entries of this loop; True: of no other waker."""
        loop.add_reader(self.fd, self.settle)

    def wake(self) -> None:
        """Items are done (never blocks: a loop that is closed just never reads)."""
        os.eventfd_write(self.fd, 1)

    def settle(self) -> None:
        """Resolve the futures of the entries done (on the loop, when the eventfd is readable)."""
        try:  # noqa: SIM105 - no suppress() object made per batch
            os.eventfd_read(self.fd)
        except BlockingIOError:  # read on an earlier turn already
            pass
        done = self.done
        while done:
            entries, mine = done.popleft()
            for entry in entries:  # a batch: only this loop's entries when ``mine``
                future = entry.future
                if future is None or not (mine or entry.waker is self):
                    continue
                result = entry.result
                try:
                    if isinstance(result, str):
                        future.set_result(result)
                    else:
                        future.set_exception(result or AuditUnavailableError("audit event lost"))
                except asyncio.InvalidStateError:  # failed meanwhile (its deadline), cancelled
                    pass


class Entry(Protocol):
    """One event and its result; on a loop the producer's own (a decision's fields)."""

    @property
    def kind(self) -> EventKind: ...
    @property
    def fields(self) -> Any: ...  # a Mapping[str, Any]

    future: asyncio.Future[str] | None
    result: str | BaseException | None  # None: not done; no waker: posted
    waker: Any  # _Waker (a loop), _Waiting (a thread) or None (posted)


class _Item:
    """One event queued by a thread or posted (:class:`Entry`)."""

    __slots__ = ("fields", "future", "kind", "result", "waker")

    def __init__(self, kind: EventKind, fields: Mapping[str, Any], waker: Any = None) -> None:
        self.kind, self.fields, self.waker = kind, fields, waker
        self.future: asyncio.Future[str] | None = None
        self.result: str | BaseException | None = None


class _WitnessRelay:
    """Appends durable checkpoints to the witness on a thread of its own.

    At most :data:`WITNESS_BACKLOG` checkpoints wait for a witness that is slow,
    hangs or refuses them; the oldest beyond that are dropped, and said so once per
    backlog. Refused checkpoints are appended first with the next ones, so a
    witness that comes back catches up in order.

    Args:
        witness: The witness file.
    """

    def __init__(self, witness: Witness) -> None:
        self.witness = witness
        self._pending: deque[Checkpoint] = deque()
        self._cond = threading.Condition()
        self._closing = self._dropping = False
        self._thread = threading.Thread(target=self._run, name="audit-witness", daemon=True)
        self._thread.start()

    def publish(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Queue checkpoints for the witness and return."""
        with self._cond:
            self._pending.extend(checkpoints)
            over = len(self._pending) - WITNESS_BACKLOG
            if over > 0:
                for _ in range(over):
                    self._pending.popleft()
                if not self._dropping:
                    self._dropping = True
                    _log.error("audit witness %s is behind by %d checkpoints: the oldest are "
                               "dropped from it (the journal holds them all)",
                               self.witness.path, WITNESS_BACKLOG)
            self._cond.notify()

    def _run(self) -> None:
        refused: list[Checkpoint] = []
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    break
                taken = [*refused, *self._pending][-WITNESS_BACKLOG:]
                self._pending.clear()
                self._dropping = False
            try:
                self.witness.publish(taken)
            except Exception as exc:  # the journal holds the checkpoints; keep the thread
                if not refused:
                    _log.error("audit witness %s refused checkpoints (kept for a retry): %s",
                               self.witness.path, exc)
                refused = taken
            else:
                refused = []
        with contextlib.suppress(OSError):
            self.witness.close()

    def close(self, timeout: float) -> None:
        """Append what waits and close the witness, waiting at most ``timeout`` seconds."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            _log.error("audit witness %s did not take the last checkpoints within %g s; "
                       "left behind", self.witness.path, timeout)


class JournalWriter:
    """The one thread that writes a journal; producers call :meth:`submit` and friends.

    Args:
        journal: The journal appended to.
        hmac_key: Key of the subject pseudonyms (raw ``subject_id`` fields).
        signing_key: Signs checkpoints.
        writer_id: Prefix of this writer's chain id.
        chain_key: Keys the chain (format 4).
        checkpoint_every: Sign a checkpoint at least every this many events.
        checkpoint_interval: ... and within this many seconds of the first unsigned event.
        witness: Also receives every checkpoint once it is durable (on its own thread).
        committed: Called with every durable batch (on the writer thread).
        max_batch: Most events in one append.
        reserve_bytes: Free space to keep on the journal's filesystem; below it appends are
            refused (0: no reserve).
    """

    def __init__(
        self,
        journal: Journal,
        *,
        hmac_key: bytes,
        signing_key: Ed25519PrivateKey,
        writer_id: str,
        chain_key: ChainKey,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        witness: Witness | None = None,
        committed: Sequence[Committed] = (),
        max_batch: int = 8192,
        reserve_bytes: int = 0,
    ) -> None:
        self.journal = journal
        self._pseudonyms = Pseudonyms(hmac_key)
        self._key = signing_key
        self.writer_id = f"{writer_id}/{new_event_id()}"
        self._linker = Linker(self.writer_id, chain_key, 4)
        self._every = max(1, checkpoint_every)
        self._terms = Terms(4, self._every, checkpoint_interval)
        self._interval = checkpoint_interval
        self._witness = _WitnessRelay(witness) if witness is not None else None
        self.reserve = DiskReserve(journal.folder, reserve_bytes, ahead=GROW)
        self.failures = FailureLog(f"audit journal write to {journal.folder}")
        """Every append that failed (its cause), and the latest that worked."""
        self._committed = tuple(committed)
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._bell = threading.Lock()  # held, and released to wake the writer (see _ring)
        self._bell.acquire()
        self._queue: deque[Entry] = deque()  # appended without the lock by coroutines
        self._wakers: dict[asyncio.AbstractEventLoop, _Waker] = {}
        self._countersigns: deque[Checkpoint] = deque()  # other chains', for the next batch
        self._inflight: list[Entry] | None = None  # the batch being written
        self._idle = False  # the writer waits for work (set before it looks at the queue)
        self._closed = False
        self._seq, self._prev, self._opened = 0, GENESIS_HASH, False
        self._unsigned, self._unsigned_since = 0, 0.0
        self._stopped = False  # the thread ended (read per event: cheaper than is_alive())
        self._thread = threading.Thread(target=self._main, name="audit-journal-writer",
                                        daemon=True)
        self._thread.start()

    # -- producers ---------------------------------------------------------------------------

    def _ring(self) -> None:
        """Wake the writer if it waits for work (a second ring before it wakes does nothing)."""
        self._idle = False
        try:  # noqa: SIM105 - no suppress() object made per ring
            self._bell.release()
        except RuntimeError:  # rung already
            pass

    def _put(self, items: Sequence[Entry]) -> None:
        with self._lock:
            if self._closed or self._stopped:
                raise AuditUnavailableError("the audit trail is closed")
            self._queue.extend(items)
        if self._idle:
            self._ring()

    def submit(self, kind: EventKind, fields: Mapping[str, Any], timeout: float = 30.0) -> str:
        """Queue one event and block until it is durable; its id.

        Raises:
            AuditUnavailableError: it is not durable (journal refused, or no answer in time).
        """
        waiting = _Waiting()
        item = _Item(kind, fields, waiting)
        self._put((item,))
        if not waiting.wait(item, timeout):
            raise AuditTimeoutError(f"audit writer did not confirm within {timeout:g} s")
        if not isinstance(item.result, str):
            raise item.result or AuditUnavailableError("audit event lost")
        return item.result

    def results(self, kind: EventKind, many: Sequence[Mapping[str, Any]],
                timeout: float = 30.0) -> list[str | None]:
        """Queue events in order and block until they are durable; per event its id or None."""
        waiting = _Waiting()
        items = [_Item(kind, f, waiting) for f in many]
        with contextlib.suppress(AuditUnavailableError):
            if items:
                self._put(items)
                waiting.wait(items[-1], timeout)
        return [item.result if isinstance(item.result, str) else None for item in items]

    def start(self, kind: EventKind, fields: Mapping[str, Any]) -> asyncio.Future[str]:
        """Queue one event now (on an event loop); the future resolves with its id once durable."""
        return self.hand(_Item(kind, fields))

    def hand(self, entry: Entry) -> asyncio.Future[str]:
        """Queue ``entry`` itself now (on an event loop); its future (also set on it)."""
        if self._closed or self._stopped:
            raise AuditUnavailableError("the audit trail is closed")
        loop = asyncio.get_running_loop()
        entry.waker = self._wakers.get(loop) or self._waker(loop)
        future: asyncio.Future[str] = loop.create_future()
        entry.future, entry.result = future, None
        self._queue.append(entry)  # no lock: a deque append is atomic
        if self._idle:  # read after the append: a writer not idle yet will see the entry
            self._ring()  # the first of a burst wakes it; the others see it busy
        if self._stopped:  # the thread ended meanwhile: it took the entry (written or failed,
            with self._lock:  # the future says which) or missed it (its last act holds the lock)
                if entry not in self._queue:
                    return future
                self._queue.remove(entry)
            raise AuditUnavailableError("the audit trail is closed")
        return future

    def _waker(self, loop: asyncio.AbstractEventLoop) -> _Waker:
        """The waker of ``loop`` made (once per loop; those of closed loops are forgotten).

        Under the lock: loops on other threads may make theirs at the same time.
        """
        with self._lock:
            wakers = self._wakers
            for closed in [known for known in wakers if known.is_closed()]:
                del wakers[closed]
            waker = wakers[loop] = _Waker(loop)
        return waker

    def share_digests(self, made: Mapping[str, tuple[int, bytes]],
                      pseudonym: Callable[[str], str]) -> bool:
        """Pseudonymise subjects the subject register digested from its digests
        (:meth:`guard.audit._fields.Pseudonyms.share`); False for another key's register."""
        return self._pseudonyms.share(made, pseudonym)

    def countersign(self, checkpoints: Sequence[Checkpoint], timeout: float = 30.0) -> None:
        """Append checkpoints signed for other chains with a ``heartbeat`` event, once durable.

        They reach the index and the witness like the writer's own checkpoints.

        Raises:
            AuditUnavailableError: the batch was not durable.
        """
        self._countersigns.extend(checkpoints)
        self.submit(EventKind.HEARTBEAT, {"detail": "countersign"}, timeout)

    def post(self, kind: EventKind, fields: Mapping[str, Any]) -> None:
        """Queue one event and return; a failure to write it is logged."""
        self._put((_Item(kind, fields),))

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything queued before the call is appended (or has failed)."""
        with self._lock:
            last = self._queue[-1] if self._queue else self._inflight[-1] if self._inflight \
                else None
        if self._idle:
            self._ring()
        deadline = time.monotonic() + timeout
        while last is not None and last.result is None:
            if time.monotonic() >= deadline:
                raise AuditUnavailableError(f"audit writer did not flush within {timeout:g} s")
            time.sleep(0.001)

    @property
    def alive(self) -> bool:
        """True while the writer thread runs."""
        return not self._stopped

    def close(self, timeout: float = 30.0) -> None:
        """Append what is queued, sign the closing checkpoint and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._ring()
        self._thread.join(timeout)

    # -- the thread --------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._run()
        finally:  # fail every waiter at once: nothing takes their events any more
            with self._lock:
                self._stopped = True
                items = [*(self._inflight or ()), *self._queue]
                self._queue.clear()
            for item in items:
                if not isinstance(item.result, str):
                    item.result = AuditUnavailableError("the audit writer stopped")
            self._release(items)
            with self._lock:
                self._wakers.clear()  # their loops' eventfds close with the loops

    def _run(self) -> None:
        queue = self._queue
        take = queue.popleft
        while True:
            while True:
                self._idle = True  # before looking: a producer that appends now rings
                if queue or self._closed or (self._unsigned and self._checkpoint_due()):
                    break
                self._bell.acquire(timeout=min(1.0, self._interval))
            self._idle = False
            with self._lock:
                items = self._inflight = [take() for _ in range(min(len(queue), self._max_batch))]
                closing = self._closed and not queue
            durable: tuple[Sequence[Row], Sequence[Checkpoint]] | None = None
            try:
                if items:
                    durable = self._commit(items)
                elif self._unsigned and self._checkpoint_due():
                    checkpoints = [self._sign(CheckpointKind.PERIODIC, self._seq, self._prev)]
                    self._append([checkpoint_record(checkpoints[0])])
                    durable, self._unsigned = ((), checkpoints), 0
            except AuditUnavailableError:  # the failure log has it; producers hear why
                pass
            except Exception:  # keep the thread; its producers fail closed (below)
                _log.exception("audit journal batch of %d event(s) failed", len(items))
            self._inflight = None
            if durable is None:  # events the batch failed before building: lost
                for item in items:
                    if item.result is None:
                        item.result = AuditUnavailableError("audit event lost")
            self._release(items)
            if durable is not None:  # after the producers: they wait for the journal only
                self._tell(*durable)
            if closing:
                self._close_chain()
                return

    def _checkpoint_due(self) -> bool:
        return time.time() - self._unsigned_since >= self._interval

    def _sign(self, kind: CheckpointKind, seq: int, hash_: str) -> Checkpoint:
        return sign_checkpoint(self._key, checkpoint_id=new_event_id(), writer_id=self.writer_id,
                               seq=seq, hash_=hash_, ts=utc_now(), kind=kind, terms=self._terms)

    def _signed(self, kind: CheckpointKind, seq: int, hash_: str,
                checkpoints: list[Checkpoint]) -> bytes:
        """A checkpoint signed and added to ``checkpoints``; its record."""
        checkpoints.append(cp := self._sign(kind, seq, hash_))
        return checkpoint_record(cp)

    def _commit(self, items: list[Entry]) -> tuple[Sequence[Row], Sequence[Checkpoint]] | None:
        """Build, link and append one batch; set each item's result.

        Returns:
            The durable rows (their content columns only, when no listener wants the
            rows) and checkpoints, for :meth:`_tell`; None when the journal refused the
            batch.
        """
        now = utc_now()
        seq, prev, writer_id = self._seq, self._prev, self.writer_id
        link = self._linker.link
        rows: list[Row] = []
        checkpoints: list[Checkpoint] = []
        while self._countersigns:  # popped one by one: countersign() appends without the lock
            checkpoints.append(self._countersigns.popleft())
        records = list(map(checkpoint_record, checkpoints))
        if not self._opened:
            records.append(self._signed(CheckpointKind.OPEN, 0, GENESIS_HASH, checkpoints))
        unsigned = self._unsigned
        if unsigned and self._checkpoint_due():  # the stretch ends before this batch
            records.append(self._signed(CheckpointKind.PERIODIC, seq, prev, checkpoints))
            unsigned = 0
        every = self._every
        left = every - unsigned  # events until the next checkpoint (at the exact event)
        begun: int | None = None if unsigned else 0  # the row that begins a stretch here
        pseudonyms, whole, failed = self._pseudonyms, bool(self._committed), False
        add_record, add_row = records.append, rows.append
        for item, event_id in zip(items, new_event_ids(len(items)), strict=True):
            try:
                head = content(item.kind, item.fields, pseudonyms, now, event_id)
                hash_, record = link(head, seq + 1, prev)
            except Exception as exc:  # only this event is unrecordable
                item.result = AuditUnavailableError(f"audit event cannot be recorded: {exc}")
                failed = True
                continue
            seq += 1
            add_record(record)
            add_row((*head, writer_id, seq, prev, hash_) if whole else head)
            prev = hash_
            left -= 1
            if not left:  # no stretch exceeds `every`
                add_record(self._signed(CheckpointKind.PERIODIC, seq, prev, checkpoints))
                left, begun = every, len(rows)
        unsigned = every - left
        started = rows[begun][2] if begun is not None and begun < len(rows) else None
        built = [item for item in items if item.result is None] if failed else items
        before = self.journal.next_offset
        try:
            self._append(records)
        except AuditUnavailableError as exc:
            for item in built:
                item.result = exc
            return None
        except Exception:  # not a refusal: its producers fail closed (_run)
            if self.journal.next_offset != before:  # after the sync: the records are there
                self._advance(seq, prev, unsigned, started)  # and their sequences taken
            raise
        for item, row in zip(built, rows, strict=True):
            item.result = row[0]
        self._advance(seq, prev, unsigned, started)
        return rows, checkpoints

    def _advance(self, seq: int, prev: str, unsigned: int, started: str | None) -> None:
        """The chain goes on after a batch in the journal: its last sequence and hash."""
        self._seq, self._prev, self._opened = seq, prev, True
        if started is not None:
            self._unsigned_since = ts_epoch(started) or time.time()
        self._unsigned = unsigned

    def _append(self, records: Sequence[bytes]) -> None:
        """Append records with one fdatasync.

        Refused while the free-space reserve is short; the failure log hears how it went.
        """
        try:
            # The batch's bytes (each record framed with an 8-byte header) must fit above it.
            why = self.reserve.shortfall(sum(map(len, records)) + 8 * len(records))
            if why is not None:
                raise AuditUnavailableError(why)
            self.journal.append(records)
        except AuditUnavailableError as exc:
            self.failures.failed(str(exc))
            raise
        self.failures.succeeded()

    def _tell(self, rows: Sequence[Row], checkpoints: Sequence[Checkpoint]) -> None:
        """Hand a durable batch to the witness and the listeners (their failures are logged)."""
        if self._witness is not None and checkpoints:
            self._witness.publish(checkpoints)  # queued for its thread: a hung witness waits
        for listener in self._committed:
            try:
                listener(rows, checkpoints)
            except Exception as exc:  # best effort; the journal is the record
                _log.debug("audit batch listener failed: %s", exc)

    def _release(self, items: list[Entry]) -> None:
        """Wake each waker of ``items`` once (a loop keeps the batch); log posted failures.

        Every item has its result.
        """
        wakers = dict.fromkeys(map(_WAKER, items))
        posted = None in wakers
        if posted:  # nobody waits for these: a failure is logged
            del wakers[None]
            for item in items:
                if item.waker is None and not isinstance(item.result, str):
                    _log.error("audit %s event was not recorded: %s", item.kind.value,
                               item.result)
        mine = len(wakers) == 1 and not posted  # the batch is one loop's (or thread's)
        for waker in wakers:
            if waker.done is not None:
                waker.done.append((items, mine))
            waker.wake()

    def _close_chain(self) -> None:
        """Sign the closing checkpoint of the chain (if it has events) and close the witness."""
        if self._opened:
            checkpoints = [self._sign(CheckpointKind.CLOSE, self._seq, self._prev)]
            with contextlib.suppress(AuditUnavailableError):
                self._append([checkpoint_record(checkpoints[0])])
                self._tell((), checkpoints)
        if self._witness is not None:
            self._witness.close(5.0)
