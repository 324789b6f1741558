"""``JournalTrail``: durable in the journal at the speed of the disk, queryable shortly after.

An event is durable once its batch is appended to the journal and synced
(:mod:`guard.audit._jwriter`); the indexer then adds it to the query store
(:mod:`guard.audit._indexer`). Producers hand over ``(kind, fields)``. A third
thread countersigns the stale tails of chains whose writers stopped
(:mod:`guard.audit._countersign`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.context import get_current
from opentelemetry.trace import Span
from opentelemetry.trace.propagation import _SPAN_KEY

from guard._errors import AuditUnavailableError
from guard.audit._checkpoint import Checkpoint
from guard.audit._countersign import countersign_stale
from guard.audit._event import EventKind
from guard.audit._fields import ChainKey, row_event
from guard.audit._follow import ChildIndexer, check_cpus, hurry
from guard.audit._journal import durable_end, journal_id, lanes, open_lane
from guard.audit._jwriter import JournalWriter
from guard.audit._keys import derive_chain_key, load_hmac_key, load_signing_key
from guard.audit._otel import OtlpLogExporter, span_ids
from guard.audit._schema import Row
from guard.audit._store import AuditStoreError, Store, indexed_offset, open_store, sqlite_path
from guard.audit._witness import Witness

if TYPE_CHECKING:
    from guard.config import AuditSettings

_log = logging.getLogger("guard.audit")


def journal_folder(settings: AuditSettings) -> Path:
    """The journal folder the settings name.

    Default: ``<file>.journal`` beside an SQLite store; for PostgreSQL
    ``.guard/audit-journal/<host>_<port>_<database>``, so that two stores never
    share a journal.
    """
    if settings.journal is not None:
        return settings.journal
    if settings.store.startswith("sqlite:///"):
        db = sqlite_path(settings.store)
        return db.with_name(db.name + ".journal")
    url = urlsplit(settings.store)
    where = f"{url.hostname or 'localhost'}_{url.port or 5432}_{url.path.strip('/')}"
    return Path(".guard/audit-journal") / re.sub(r"[^A-Za-z0-9._-]", "_", where)


def wait_store(store: Store, targets: Mapping[str, int], timeout: float) -> None:
    """Return once the store has indexed each journal (by id) up to its target offset.

    A store that refuses meanwhile (down, restarting) is asked again until ``timeout``.
    """
    deadline, why = time.monotonic() + timeout, ""
    while True:
        try:
            if all(indexed_offset(store, key) >= end for key, end in targets.items()):
                return
        except AuditStoreError as exc:
            why = f": {exc}"
        if time.monotonic() >= deadline:
            raise AuditUnavailableError(
                f"the audit index did not catch up with the journal within {timeout:g} s{why}")
        time.sleep(0.01)


def wait_indexed(settings: AuditSettings, timeout: float = 30.0) -> None:
    """Return once the store indexes every event durable in the journal when called.

    For any process that reads the store after events were recorded (a script, a
    test, another replica); the recording process can call :meth:`JournalTrail.flush`.
    Every lane is indexed by one follower of the folder: a service's child process
    (``audit.index = "auto"``) or ``guard audit index`` (``"external"``). A child of this
    process is asked to index at once, not at its pace (:func:`guard.audit._follow.hurry`).

    Args:
        settings: Where the store and the journal are.
        timeout: Seconds to wait.

    Raises:
        AuditUnavailableError: the index did not catch up within ``timeout`` seconds.
        AuditStoreError: there is no store.
    """
    folder = journal_folder(settings)
    targets = {journal_id(lane): durable_end(lane) for lane in lanes(folder)}
    hurry(folder)
    store = open_store(settings.store, create=False, timeout=timeout)
    try:
        wait_store(store, targets, timeout)
    finally:
        store.close()


def _traced(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    """``fields`` with the current span's trace ids, when there is a span.

    Fields that carry their own (the guard stamps a decision's at decide time) are
    taken as they are: the ids would not replace them, so they are not looked up.
    The span is the one ``trace.get_current_span()`` finds (the current context's
    span key, opentelemetry-api pinned), read without its layers: an outcome with no
    span current costs a look-up in the context, not about 5,000 instructions.
    """
    if "trace_id" in fields:
        return fields
    span = get_current().get(_SPAN_KEY)
    if span is None or not isinstance(span, Span):  # trace.get_current_span()'s INVALID_SPAN:
        return fields  # no ids (None first: an ABC's isinstance of None is ~2,300 instructions)
    trace_id, span_id = span_ids(span.get_span_context())
    if trace_id is None or span_id is None:
        return fields
    return {"trace_id": trace_id, "span_id": span_id, **fields}


class JournalTrail:
    """Record audit events in a journal; :meth:`record_fields` returns once it is synced.

    Args:
        settings: The ``[audit]`` settings: the store the journal is indexed into, the
            keys (loaded, or created on first use), the journal folder (one lane per
            process under it), checkpoints, witness, OTLP export, segment size,
            free-space reserve, readiness probe, and who indexes: ``auto`` starts a child
            process (:class:`~guard.audit._follow.ChildIndexer`), ``external`` leaves it to
            ``guard audit index`` (:meth:`flush` waits for the store's offset either way).
        timeout: Seconds to wait for the store.
    """

    def __init__(self, settings: AuditSettings, *, timeout: float = 5.0) -> None:
        check_cpus(settings.index_cpus if settings.index == "auto" else ())  # nothing open yet
        self.store = open_store(settings.store, create=True, timeout=timeout)
        self._signing = load_signing_key(settings.signing_key, create=True)
        hmac_key = load_hmac_key(settings.hmac_key, create=True)
        self.journal = open_lane(journal_folder(settings),
                                 segment_bytes=settings.journal_segment_mb << 20)
        self.child = ChildIndexer(self.journal.folder.parent, self.store.url,
                                  retry=settings.index_retry_seconds,
                                  cpus=settings.index_cpus) if settings.index == "auto" else None
        self._otlp = OtlpLogExporter(settings.otlp_endpoint) if settings.otlp_endpoint else None
        self._chain_key = ChainKey(derive_chain_key(hmac_key))
        self.writer = JournalWriter(
            self.journal,
            hmac_key=hmac_key,
            signing_key=self._signing,
            writer_id=settings.writer_id or socket.gethostname(),
            chain_key=self._chain_key,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_interval=settings.checkpoint_seconds,
            witness=Witness(settings.witness) if settings.witness is not None else None,
            committed=[self._export] if self._otlp is not None else (),
            reserve_bytes=settings.reserve_mb * 1_000_000,
        )
        self._probe_interval = settings.readiness_probe_seconds
        self._probe_lock = threading.Lock()
        self._probed: tuple[float, bool, str] | None = None
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep,
                                         args=(max(1.0, settings.checkpoint_seconds),),
                                         name="audit-countersign", daemon=True)
        self._sweeper.start()

    def _export(self, rows: Sequence[Row], _checkpoints: Sequence[Checkpoint]) -> None:
        if self._otlp is not None and rows:
            self._otlp([row_event(row) for row in rows])

    def _sweep(self, every: float) -> None:
        """Every ``every`` seconds, countersign the stale tails of stopped writers' chains.

        The countersigns go through the writer into this trail's journal, so they
        reach the index and the witness like every other checkpoint.
        """
        while not self._stop.wait(every):
            try:
                signed = countersign_stale(self.store, self._signing, self._chain_key,
                                           self.writer_id)
                if signed:
                    self.writer.countersign(signed)
            except Exception as exc:  # the store or the journal is down or odd: next time
                _log.debug("countersigning stopped writers' chains failed: %s", exc)

    @property
    def writer_id(self) -> str:
        """The id of the chain this trail writes."""
        return self.writer.writer_id

    # -- fields (the guard's path) -----------------------------------------------------------

    def record_fields(self, kind: EventKind, fields: Mapping[str, Any],
                      timeout: float = 30.0) -> str:
        """Record an event from its fields (raw ``subject_id``); its id once durable.

        Raises:
            AuditUnavailableError: the journal could not take it (AuditTimeoutError: not
                within ``timeout`` seconds; it may still be written).
        """
        return self.writer.submit(kind, _traced(fields), timeout)

    def start_fields(self, kind: EventKind, fields: Mapping[str, Any]) -> asyncio.Future[str]:
        """Queue an event now; the future resolves with its id once it is durable."""
        return self.writer.start(kind, _traced(fields))

    def post_fields(self, kind: EventKind, fields: Mapping[str, Any]) -> None:
        """Queue an event for the next batch and return (a failure is logged)."""
        self.writer.post(kind, _traced(fields))

    def record_many_fields(self, kind: EventKind, many: Sequence[Mapping[str, Any]]
                           ) -> list[str | None]:
        """Record events in order in as few batches as fit; per event its id or None."""
        return self.writer.results(kind, [_traced(f) for f in many])

    # -- life cycle --------------------------------------------------------------------------

    def flush(self, timeout: float = 30.0) -> None:
        """Return once everything queued before the call is durable and in the store.

        Raises:
            AuditUnavailableError: not within ``timeout`` seconds.
        """
        self.writer.flush(timeout)
        end = self.journal.next_offset
        if self.child is not None:
            self.child.want()  # now, not at its pace
        wait_store(self.store, {self.journal.journal_id: end}, timeout)

    def ready(self) -> tuple[bool, str]:
        """Can this trail make events durable right now? ``(ok, why)``.

        Proven by a real append: the last one succeeded less than ``probe_interval``
        seconds ago, or a ``heartbeat`` event is recorded now (a failing journal at
        most once a second). Blocks while it probes: call it off an event loop.
        """
        if not self.writer.alive:
            return False, "audit writer stopped"
        failures = self.writer.failures
        ok_at = failures.ok_at
        if (self.writer.reserve.shortfall() is not None or failures.failing or ok_at is None
                or time.monotonic() - ok_at >= self._probe_interval):
            with self._probe_lock:
                probed = self._probed
                if probed is None or time.monotonic() - probed[0] >= 1.0:
                    try:
                        self.writer.submit(EventKind.HEARTBEAT, {"detail": "readiness probe"},
                                           timeout=10.0)
                    except AuditUnavailableError as exc:
                        probed = (time.monotonic(), False, str(exc))
                    else:
                        probed = (time.monotonic(), True, "")
                    self._probed = probed
            if not probed[1]:
                return False, probed[2]
        if self.child is not None and self.child.last_error is not None:
            return True, f"audit journal writable; index behind: {self.child.last_error}"
        return True, "audit journal writable"

    def close(self, timeout: float = 30.0) -> None:
        """Write the closing checkpoint, index the journal's end, release everything (once).

        A writer still inside an append after ``timeout`` seconds (a sync that does not
        return) is left behind: the journal refuses every later append and keeps its
        files open, so no write of that writer lands in a file opened later.
        """
        if self._stop.is_set():
            return
        self._stop.set()
        self._sweeper.join(30.0)  # bounded: a sweep stuck on a hung store is left behind
        self.writer.close(timeout)
        hung = self.writer.alive
        if hung:
            self.journal.refuse("the audit trail is closed")
            _log.error("audit journal writer did not stop within %g s (a write or sync of %s "
                       "that does not return): its journal refuses every later append and "
                       "stays open until the process ends", timeout, self.journal.folder)
        if self.child is not None:  # the closing checkpoint indexed, then the child stopped
            with contextlib.suppress(AuditUnavailableError):
                if not hung:
                    self.flush(timeout)
            self.child.close()
        if self._otlp is not None:
            self._otlp.close()
        if not hung:
            self.journal.close()
        self.store.close()

    def __enter__(self) -> JournalTrail:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
