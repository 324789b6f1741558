"""The audit trail: durable, chained, checkpointed recording of audit events."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from guard._errors import AuditUnavailableError
from guard.audit._event import AuditEvent, ChainKey, EventKind
from guard.audit._health import DiskReserve, FailureLog, GuardedSpool, GuardedStore
from guard.audit._ids import new_event_id
from guard.audit._keys import derive_chain_key, load_hmac_key, load_signing_key
from guard.audit._otel import OtlpLogExporter
from guard.audit._pipeline import utc_now
from guard.audit._store import Store, open_store
from guard.audit._witness import Witness
from guard.audit._writer import Emitter, GroupCommitWriter

if TYPE_CHECKING:
    from guard.config import AuditSettings


class Trail(Protocol):
    """What the guard records through: :class:`AuditTrail` or :class:`JournalTrail`."""

    def record(self, event: AuditEvent) -> None: ...

    async def arecord(self, event: AuditEvent) -> None: ...

    def post(self, event: AuditEvent) -> None: ...

    def flush(self, timeout: float = 30.0) -> None: ...

    def ready(self) -> tuple[bool, str]: ...

    def close(self) -> None: ...


def open_trail(settings: AuditSettings) -> Trail:
    """The trail ``settings.writer`` asks for: the group-commit writer, or the journal."""
    if settings.writer == "journal":
        from guard.audit._jtrail import JournalTrail

        return JournalTrail.open(settings)
    return AuditTrail.open(settings)


class AuditTrail:
    """Record audit events durably; :meth:`record` returns only once the event is on disk.

    Args:
        store: The store to write to.
        signing_key: Signs checkpoints.
        writer_id: Prefix of this trail's chain id (default: the host name).
        checkpoint_every: Sign a checkpoint every this many events.
        checkpoint_interval: ... and within this many seconds of the first unsigned event.
        chain_key: Keys the chain (format 3, see :func:`guard.audit.derive_chain_key`);
            None writes format 2, which a store writer can re-hash.
        witness: Append-only file that also receives every checkpoint.
        spool: Spool file for events the store cannot take (None: fail closed).
        otlp_endpoint: Also export every durable event as an OTLP log record.
        reserve_bytes: Free space to keep on the filesystem of an SQLite store and of
            the spool; below it events are refused (0: no reserve).
        probe_interval: :meth:`ready` writes a ``heartbeat`` event when no event was
            written for this many seconds.
    """

    def __init__(
        self,
        store: Store,
        signing_key: Ed25519PrivateKey,
        *,
        writer_id: str | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 60.0,
        chain_key: bytes | None = None,
        witness: Path | None = None,
        spool: Path | None = None,
        otlp_endpoint: str | None = None,
        reserve_bytes: int = 0,
        probe_interval: float = 30.0,
    ) -> None:
        self.store = store
        self._failures = FailureLog(f"audit store write to {_where(store)}")
        path = getattr(store, "path", None)  # an SQLite file; PostgreSQL's disk is the server's
        self._reserve = reserve = (
            DiskReserve(path, reserve_bytes) if isinstance(path, Path) else None)
        self._spool = GuardedSpool(spool, reserve_bytes) if spool is not None else None
        self._otlp = OtlpLogExporter(otlp_endpoint) if otlp_endpoint else None
        self._probe_interval = probe_interval
        self._probe_lock = threading.Lock()
        self._probed: tuple[float, bool, str] | None = None  # (when, ok, why) of the last probe
        emitters: list[Emitter] = [self._otlp] if self._otlp else []
        self._writer = GroupCommitWriter(
            GuardedStore(store, self._failures, reserve),
            writer_id=writer_id or socket.gethostname(),
            signing_key=signing_key,
            checkpoint_every=checkpoint_every,
            checkpoint_interval=checkpoint_interval,
            chain_key=ChainKey(chain_key) if chain_key is not None else None,
            witness=Witness(witness) if witness is not None else None,
            spool=self._spool,
            emitters=emitters,
        )

    @classmethod
    def open(
        cls, settings: AuditSettings, *, checkpoint_interval: float | None = None,
        timeout: float = 5.0,
    ) -> AuditTrail:
        """Open the store, load (or create) the keys and start the writer.

        The chain is keyed (format 3) with the key derived from ``audit.hmac_key``.
        """
        chain_key = derive_chain_key(load_hmac_key(settings.hmac_key, create=True))
        return cls(
            open_store(settings.store, create=True, timeout=timeout),
            load_signing_key(settings.signing_key, create=True),
            writer_id=settings.writer_id,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_interval=(settings.checkpoint_seconds if checkpoint_interval is None
                                 else checkpoint_interval),
            chain_key=chain_key,
            witness=settings.witness,
            spool=settings.spool,
            otlp_endpoint=settings.otlp_endpoint,
            reserve_bytes=settings.reserve_mb * 1_000_000,
            probe_interval=settings.readiness_probe_seconds,
        )

    @property
    def writer_id(self) -> str:
        """The id of the chain this trail is writing now."""
        return self._writer.writer_id

    def record(self, event: AuditEvent) -> None:
        """Link ``event`` into the chain; return once it is durable.

        Raises:
            AuditUnavailableError: neither the store nor a spool could take it.
        """
        self._writer.submit(event)

    def record_many(self, events: Sequence[AuditEvent]) -> list[BaseException | None]:
        """Link ``events`` into the chain in order; return once all are settled.

        Returns, per event, ``None`` (durable) or the error that kept it out.

        Raises:
            AuditUnavailableError: the trail is closed or its writer did not confirm.
        """
        return self._writer.submit_many(events)

    async def arecord(self, event: AuditEvent) -> None:
        """Like :meth:`record` without blocking the event loop."""
        await self._writer.asubmit(event)

    def post(self, event: AuditEvent) -> None:
        """Queue ``event`` for the next group commit and return without waiting.

        It is written in the same transaction as the events queued with it, shortly
        after; a crash before that commit loses it. A write that fails is logged
        (logger ``guard.audit``). Never blocks, so it is safe on an event loop.

        Raises:
            AuditUnavailableError: the trail is closed.
        """
        self._writer.post(event)

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every event queued before the call is written (or has failed).

        Raises:
            AuditUnavailableError: not within ``timeout`` seconds.
        """
        self._writer.flush(timeout)

    def ready(self) -> tuple[bool, str]:
        """Can this trail make events durable right now? ``(ok, why)``.

        Proven by a real write: the last event write succeeded less than
        ``probe_interval`` seconds ago, or a ``heartbeat`` event is recorded now.
        A failing store is probed again at most once a second. Blocks while it
        probes: call it off an event loop.
        """
        if not self._writer.alive:
            return False, "audit writer stopped"
        failures = self._failures
        ok_at = failures.ok_at
        short = self._reserve.shortfall() if self._reserve is not None else None
        now = time.monotonic()
        if (short is None and not failures.failing and ok_at is not None
                and now - ok_at < self._probe_interval):
            return True, self._writable()
        spool = self._spool
        if (failures.failing and spool is not None and not spool.failures.failing
                and spool.failures.ok_at is not None
                and now - spool.failures.ok_at < self._probe_interval):
            return True, self._spooling()
        with self._probe_lock:
            probed = self._probed
            if probed is not None and time.monotonic() - probed[0] < _REPROBE_AFTER:
                return probed[1], probed[2]
            ok, why = self._probe()
            self._probed = (time.monotonic(), ok, why)
            return ok, why

    def _probe(self) -> tuple[bool, str]:
        """Record a ``heartbeat`` event; ``(ok, why)``."""
        heartbeat = AuditEvent(new_event_id(), EventKind.HEARTBEAT, utc_now(),
                               detail="readiness probe")
        try:
            self._writer.submit(heartbeat, timeout=_PROBE_TIMEOUT)
        except AuditUnavailableError as exc:
            return False, str(exc)
        if self._failures.failing and self._spool is not None:
            return True, self._spooling()
        return True, self._writable()

    def _spooling(self) -> str:
        assert self._spool is not None
        return f"audit store unavailable ({self._failures.cause}), spooling to {self._spool.path}"

    def _writable(self) -> str:
        if self._spool is not None and self._spool.pending():
            return "audit store back; replaying the spool"
        return "audit store writable"

    def close(self) -> None:
        """Flush, write the closing checkpoint, and release the store."""
        self._writer.close()
        if self._otlp is not None:
            self._otlp.close()
        if self._spool is not None:
            self._spool.close()
        self.store.close()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


_REPROBE_AFTER = 1.0
"""Seconds a probe's answer is reused (a failing store is not hammered by health checks)."""
_PROBE_TIMEOUT = 10.0
"""Seconds a readiness probe waits for its heartbeat to be durable."""


def _where(store: Store) -> str:
    """The store as log lines name it (no password)."""
    path = getattr(store, "path", None)
    if isinstance(path, Path):
        return str(path)
    url = store.url
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[1]}"
    return url
