"""Hot reload: watch the policy files or the PostgreSQL store, reload, record what happened."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import watchfiles

from guard.policy._holder import PolicyHolder, ReloadResult
from guard.policy._pgsource import SkippedPolicy, StartPolicy, watch_store

_log = logging.getLogger("guard.sidecar.reload")

POLICY_FILES = frozenset({"model.conf", "rules.csv"})

"""``(kind, version, detail)``: writes a ``policy_loaded`` / ``policy_rejected`` audit event."""


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """The outcome of the last reload attempt, for ``/readyz``."""

    at: float
    trigger: str
    ok: bool
    version: str
    error: str | None


@dataclass(slots=True)
class StoreConnection:
    """The PostgreSQL watcher's connection as ``/readyz`` shows it (wall-clock times)."""

    connected_at: float | None = None
    """When the current (or the last) LISTEN was put in place."""
    lost_at: float | None = None
    """When the connection was lost; None while connected."""
    error: str | None = None
    """Why it was lost (or cannot be made); None while connected."""

    def update(self, listening: bool, cause: str | None) -> None:
        """Note a LISTEN in place (``listening``) or a lost connection and its cause."""
        now = time.time()
        if listening:
            self.connected_at, self.lost_at, self.error = now, None, None
        else:
            if self.lost_at is None:
                self.lost_at = now
            self.error = cause


class Reloader:
    """Reloads a :class:`PolicyHolder` off the event loop, one reload at a time.

    Requests keep deciding on the policy in force while a reload compiles in a
    worker thread; the holder swaps a single reference when the new policy is
    good, so no request ever sees a half-loaded one. A bad policy is logged,
    kept out, shown in ``/readyz`` and recorded as ``policy_rejected``.

    Args:
        holder: The policy holder decisions read from (its reload listeners write
            the ``policy_loaded`` / ``policy_rejected`` audit events).
    """

    __slots__ = ("_holder", "_lock", "last", "listening", "skipped_at_start", "store")

    def __init__(self, holder: PolicyHolder) -> None:
        self._holder = holder
        self._lock = asyncio.Lock()
        self.last: ReloadStatus | None = None
        self.listening: bool | None = None
        """With a PostgreSQL source: whether pushes are being heard right now."""
        self.store = StoreConnection()
        """With a PostgreSQL source: the watcher's connection, for ``/readyz``."""
        self.skipped_at_start: tuple[SkippedPolicy, ...] = ()
        """With a PostgreSQL source: newer stored policies that did not load at start."""

    @property
    def last_error(self) -> str | None:
        """Why the last reload was rejected, or None if it succeeded (or none ran)."""
        return self.last.error if self.last is not None and not self.last.ok else None

    async def reload(self, trigger: str) -> ReloadResult:
        """Reload now; ``trigger`` says why, for the log and ``/readyz``."""
        async with self._lock:
            return await anyio.to_thread.run_sync(self._reload_sync, trigger)

    def started_on(self, start: StartPolicy) -> None:
        """Record the stored policy start-up chose, and why it skipped newer ones (if it did)."""
        self.skipped_at_start = start.skipped
        if not start.skipped:
            return
        newest = start.skipped[0]
        why = (
            f"newest stored policy #{newest.id} ({newest.version}) does not load: "
            f"{newest.error}; started on #{start.id} ({start.policy.version})"
        )
        if len(start.skipped) > 1:
            why += f", skipping {len(start.skipped)} newer row(s)"
        self.last = ReloadStatus(time.time(), "start", False, start.policy.version, why)
        _log.error("policy store: %s", why)

    def _reload_sync(self, trigger: str) -> ReloadResult:
        earlier = self.last_error
        result = self._holder.reload()
        self.last = ReloadStatus(time.time(), trigger, result.ok, result.version, result.error)
        if result.ok and not result.changed and earlier is not None:
            _log.info("policy reload (%s): %s in force, the earlier rejection is cleared",
                      trigger, result.version)
        if not result.ok:
            _log.error(
                "policy reload rejected (%s); keeping %s: %s", trigger, result.version, result.error
            )
        elif result.changed:
            _log.info(
                "policy reloaded (%s): %s -> %s", trigger, result.previous_version, result.version
            )
        return result

    async def watch_files(self, policy_dir: Path, *, debounce_ms: int = 50) -> None:
        """Reload when model.conf or rules.csv in ``policy_dir`` changes; runs until cancelled."""

        def interesting(_change: watchfiles.Change, path: str) -> bool:
            return Path(path).name in POLICY_FILES

        async for changes in watchfiles.awatch(
            policy_dir,
            watch_filter=interesting,
            debounce=debounce_ms,
            step=20,
            recursive=False,
        ):
            names = ", ".join(sorted({Path(p).name for _, p in changes}))
            await self.reload(f"changed: {names}")

    async def watch_store(self, url: str, ready: asyncio.Event | None = None) -> None:
        """Reload on every push to the PostgreSQL policy store; runs until cancelled."""

        async def pushed(version: str) -> None:
            # The version in force, pushed again, needs no reload unless a rejected
            # reload left an error to clear (the store's newest row is good again).
            if version and version == self._holder.current.version and self.last_error is None:
                return
            await self.reload(f"pushed: {version}" if version else "store reconnected")

        def state(listening: bool, cause: str | None) -> None:
            self.listening = listening
            self.store.update(listening, cause)

        await watch_store(url, pushed, ready=ready, listening=state)
