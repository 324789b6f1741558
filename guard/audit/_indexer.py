"""The indexer: builds the query store from the journal, behind it, with a persisted offset.

A thread reads the records below the journal's published durable end and adds
them to the store in one transaction per read, together with the offset after
them. It runs in ``guard audit index`` or the service's child process
(:mod:`guard.audit._follow`), which follows every lane, and in a short command
at its end (:mod:`guard.cli._trail`), at its own pace (:class:`Pace`), which
costs the writer nothing. A crash between two transactions reads the records
after the saved offset again, so the store never holds an event twice; at start
the indexer catches up from the saved offset on its own thread: a store that
refuses, at start or later, is retried; neither the producers nor the trail's
start wait for the index. A record the store refuses for itself (its place in its
chain another event's, a value no column holds) stops the lane's index at it, for
good (:meth:`Indexer._stop_at`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path

from guard.audit._event import FIELD_NAMES
from guard.audit._fields import decode_many
from guard.audit._health import FailureLog
from guard.audit._journal import JournalReader, durable_end, journal_id, segments
from guard.audit._store import RecordRefusedError, Store, indexed_offset

SHORTENED = "#shortened"
"""The store's offset row (lane id + this) for how far the index had read a lane found shorter."""

_log = logging.getLogger("guard.audit")
_CHUNK = 1000
"""Records read at a time within one index transaction."""
_IDLE_BATCH = 500
"""Most records in one transaction under ``SCHED_IDLE`` (a starved one holds up its relief)."""
_WRITER, _SEQ = FIELD_NAMES.index("writer_id"), FIELD_NAMES.index("seq")


class Pace:
    """When the next index transaction starts; the caller passes the clock (seconds).

    None of the records waiting was durable before :attr:`since`: the last time
    the indexer saw none waiting, or read up to the durable end. A transaction
    starts at once when ``batch`` records wait, else once ``since`` is
    ``interval`` less the longest of the last transactions' durations ago, so a
    record is in the store at most about ``interval`` after it is durable while
    transactions take no longer than those. Records waiting at ``now`` wait from it.
    """

    def __init__(self, interval: float, batch: int, now: float) -> None:
        self.interval = interval
        self.batch = batch
        self.poll = min(0.1, interval / 4)
        """Seconds between looks at the durable end while a transaction is not due."""
        self.since = now
        self._took: deque[float] = deque(maxlen=8)

    @property
    def took(self) -> float:
        """Seconds the longest of the last 8 transactions took (read to commit)."""
        return max(self._took, default=0.0)

    def done(self, seconds: float) -> None:
        """A transaction took ``seconds`` from its read to its commit."""
        self._took.append(seconds)

    def wait(self, now: float, waiting: int) -> float:
        """0 when a transaction should start now, else seconds until the next look."""
        if waiting <= 0:
            self.since = now
            return self.poll
        if waiting >= self.batch:
            return 0.0
        left = self.since + max(0.0, self.interval - self.took) - now
        return 0.0 if left <= 0 else min(left, self.poll)

    def read(self, now: float, drained: bool) -> None:
        """A transaction looked at the durable end at ``now`` and read up to it (``drained``),
        or left older records waiting on."""
        if drained:
            self.since = now


class Indexer:
    """Follows a journal (one lane) into a store on its own thread.

    Args:
        lane: The journal folder followed (up to its published durable end).
        batch: Most records in one index transaction (a longer backlog: one after another).
        interval: Seconds from durable to in the store that the pace aims at (:class:`Pace`).
        retry: Seconds between attempts while the store refuses.
        idle: Once the index keeps up, index under ``SCHED_IDLE`` (only CPU time no other
            thread of the machine wants), in transactions of at most ``_IDLE_BATCH`` records,
            while no record waits longer than this many seconds (:meth:`relieve`).
            None: the thread's policy is left as it is.
    """

    def __init__(self, lane: Path, store: Store, *, batch: int = 5_000,
                 interval: float = 0.3, retry: float = 1.0, idle: float | None = None) -> None:
        self.lane = lane
        self.store = store
        self._key = journal_id(lane)
        self._batch = batch
        self._pace = Pace(interval, batch, time.monotonic())
        self._retry = retry
        self.offset = 0
        """Records below this offset are in the store (once the saved offset is read)."""
        self._reader: JournalReader | None = None  # made once the saved offset is read
        self._cond = threading.Condition()
        self._pending: tuple[list[bytes], int] | None = None  # records read, the offset after
        self._wanted = 0  # a waiter wants the index at least this far: index now
        self._closed = False
        self._started = 0.0  # monotonic time the pending transaction's read started
        self.failures = FailureLog(f"audit index of {lane}")
        """The store's refusals (the latest's cause while it refuses)."""
        self.stopped: str | None = None
        """Why the index of this lane stopped for good (its cause stays in :attr:`failures`)."""
        self._idle = idle
        self.idle = False
        """The thread indexing now runs under ``SCHED_IDLE``."""
        self.relieved = 0
        """How many times a thread of normal policy took over (:meth:`relieve`)."""
        self._steps = threading.Lock()  # one thread indexes at a time (see relieve)
        self._start()

    def _start(self) -> None:
        """Start a thread indexing from now on (it inherits the calling thread's policy)."""
        self._thread = threading.Thread(target=self._run, name="audit-indexer", daemon=True)
        self._thread.start()

    def relieve(self, now: float | None = None) -> bool:
        """Hand the index to a new thread of the caller's policy if the idle one fell behind.

        A thread under ``SCHED_IDLE`` runs only when no other thread of the machine
        wants its CPU, so a saturated machine can starve it. An unprivileged thread
        cannot leave ``SCHED_IDLE`` (Linux asks for ``CAP_SYS_NICE`` or a
        ``RLIMIT_NICE`` that allows nice 0) and the threads it starts inherit it, so a
        thread of normal policy calls this now and then: when a record has waited
        longer than ``idle`` seconds, a new thread started from the caller takes over
        after the idle thread's transaction under way (at most ``_IDLE_BATCH``
        records) and goes idle again as soon as it has caught up, so a burst's
        relief never outlasts its backlog (on a saturated machine the next relief
        follows, each one ``idle`` seconds behind at most).

        Returns:
            True if a new thread took over.
        """
        if self._idle is None:
            return False
        now = time.monotonic() if now is None else now
        with self._cond:
            if (not self.idle or self._closed or self._reader is None
                    or now - self._pace.since <= self._idle
                    or durable_end(self.lane) <= self.offset):
                return False
            self.idle = False
            self.relieved += 1
            self._start()
            self._cond.notify_all()  # the idle thread, if it sleeps, ends
        _log.log(logging.INFO if self.relieved == 1 else logging.DEBUG,  # once, not per burst
                 "audit index of %s: %.1f s behind under SCHED_IDLE; indexing at normal "
                 "priority until it catches up", self.lane, now - self._pace.since)
        return True

    def relief_due(self, now: float) -> float:
        """The monotonic time before which :meth:`relieve` hands over nothing (inf: never).

        With nothing waiting, a record durable from ``now`` on may wait ``idle`` seconds.
        """
        if self._idle is None or self.stopped:
            return float("inf")
        due = self._pace.since + self._idle
        return due if due > now or durable_end(self.lane) > self.offset else now + self._idle

    def _go_idle(self) -> None:
        """Put this thread under ``SCHED_IDLE`` (under the lock; once it keeps up)."""
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError) as exc:  # not Linux: its own policy stays
            _log.warning("audit index of %s: SCHED_IDLE refused (%s)", self.lane, exc)
            self._idle = None
        else:
            self.idle = True

    def want(self, offset: int) -> None:
        """Start a transaction now if records below ``offset`` are not in the store yet."""
        with self._cond:
            self._wanted = max(self._wanted, offset)
            self._cond.notify()

    def wait(self, offset: int, timeout: float = 30.0) -> bool:
        """Block until every record below ``offset`` is in the store; False on timeout, or
        once the index stopped (:attr:`stopped`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._wanted = max(self._wanted, offset)
            while self._reader is None or self.offset < offset:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stopped or not self._thread.is_alive():
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
        if (self._reader is not None and not self._thread.is_alive()
                and self._steps.acquire(timeout=timeout)):  # a relieved thread's step ended
            self._reader.close()
            self._steps.release()

    def _ready(self) -> float:
        """0 when a transaction should start now, else how long to sleep (under the lock)."""
        reader = self._reader
        if self._pending is not None or reader is None or reader.offset < self._wanted:
            return 0.0
        return self._pace.wait(time.monotonic(), durable_end(self.lane) - reader.offset)

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while not self._closed and self._thread is me and (sleep := self._ready()) > 0:
                    if self._idle is not None and not self.idle:  # keeps up: spare CPU only
                        self._go_idle()
                    self._cond.wait(sleep)
                if self._closed or self._thread is not me:  # closed, or relieved
                    return
            try:
                with self._steps:
                    self._step()
            except Exception as exc:  # the store refused: keep the batch, try again
                self.failures.failed(str(exc))
                with self._cond:
                    self._cond.wait(self._retry)

    def _read(self) -> list[bytes]:
        """Read up to ``batch`` durable records, a chunk at a time (the store decodes them).

        Between chunks the thread gives up the interpreter lock, as the store does
        between the chunks it decodes: the writer's ``fdatasync`` returns wanting it.
        """
        records: list[bytes] = []
        reader = self._reader
        assert reader is not None
        now = time.monotonic()
        end, left = durable_end(self.lane), _IDLE_BATCH if self.idle else self._batch
        self._pace.read(now, end - reader.offset <= left)
        while left > 0 and reader.offset < end:
            chunk = reader.read(end, min(left, _CHUNK))
            records += chunk
            left -= len(chunk)
            time.sleep(0)
        return records

    def _step(self) -> None:
        if self._reader is None:  # first: how far the store is (it may be down for now)
            offset = indexed_offset(self.store, self._key)
            if offset > durable_end(self.lane):  # a lane cut or restored: never skip a record
                _log.error("the index has read %d records of %s, which holds fewer: it is "
                           "read again from its start", offset, self.lane)
                # Kept for `guard audit verify --journal`: the journal lost records.
                self.store.index_records([], self._key + SHORTENED, offset)
                found = segments(self.lane)  # the store keeps each event once
                offset = found[0][0] if found else 0
            reader = JournalReader(self.lane, offset)
            with self._cond:
                self._reader, self.offset = reader, offset
                self._pace.since = time.monotonic()  # a crash's tail waits from now
                self._cond.notify_all()
        else:
            if self._pending is None:
                self._started = time.monotonic()
                try:
                    records = self._read()
                except Exception:  # read them again, from the saved offset: never skip one
                    self._reader.close()
                    self._reader = None
                    raise
                self._pending = (records, self._reader.offset)
            records, end = self._pending
            try:
                self.store.index_records(records, self._key, end)
            except (ValueError, RecordRefusedError) as exc:
                self._stop_at(records, end, exc)
                return
            self._pace.done(time.monotonic() - self._started)
            with self._cond:
                self._pending = None
                self.offset = end
                self._cond.notify_all()
        if self.failures.failing:
            self.failures.succeeded()

    def _stop_at(self, records: list[bytes], end: int, exc: Exception) -> None:
        """Index the records before the first the store refuses for itself, then stop.

        A record that is no event, holds a value no column can hold, or claims a
        ``(writer_id, seq)`` another event holds (a lane copied from another and
        edited, a forged record, a writer's bug) is a fault of the journal, not a
        store that is down: retrying it would spin for ever and hold up every later
        record, and skipping it would hide it. The batch is halved until that record
        is found (the halves before it are indexed) and refused on its own (a batch
        refused for a race, not a record, goes on); the lane's index stops there,
        with one line naming it (readiness and ``guard audit index`` show it) until
        an operator has looked (``guard audit verify --journal``) and restarts the
        index. A store that fails otherwise meanwhile is retried as usual.
        """
        start = end - len(records)
        low, high = 0, len(records)  # records[:low] are stored; the refused one is below high
        alone = high == 1  # the refusal was of records[low] alone
        while high - low > 1:
            middle = (low + high) // 2
            try:
                self.store.index_records(records[low:middle], self._key, start + middle)
            except (ValueError, RecordRefusedError) as refused:
                high, exc, alone = middle, refused, middle - low == 1
            else:
                low = middle
                with self._cond:
                    self._pending, self.offset = (records[low:], end), start + low
                    self._cond.notify_all()
        if not alone:  # refused beside others only: asked alone before the lane stops for it
            try:
                self.store.index_records(records[low:low + 1], self._key, start + low + 1)
            except (ValueError, RecordRefusedError) as refused:
                exc = refused
            else:  # the refusal was not this record's (a race): the rest as usual
                with self._cond:
                    self._pending, self.offset = (records[low + 1:], end), start + low + 1
                    self._cond.notify_all()
                return
        why = f"the store refuses it: {exc}"
        with contextlib.suppress(ValueError, IndexError):  # an event: its place another's?
            values = decode_many(records[low:low + 1])[0]
            writer, seq, event_id = values[_WRITER], values[_SEQ], values[0]
            held = self.store.rows("SELECT event_id FROM audit_event WHERE writer_id = ? AND "
                                   "seq = ?", (writer, seq))
            if held and held[0][0] != event_id:
                why = (f"writer {writer} seq {seq} is event {held[0][0]} already, this record "
                       f"is event {event_id} (two records claim one place in the chain: a lane "
                       "copied or forged, or a writer's fault)")
        why = (f"stopped at {self.lane.name} record {start + low}: {why}; nothing from it on "
               "is indexed: run `guard audit verify --journal`, then restart the index")
        self.failures.failed(why)  # logged before a waiter is told
        with self._cond:
            self._pending, self.offset, self.stopped = None, start + low, why
            self._closed = True  # not retried, not relieved
            self._cond.notify_all()
