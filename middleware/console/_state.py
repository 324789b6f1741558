"""What the console's views share: settings, the guard, the store, the sign-in gate."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from guard import Guard
from guard.audit import Store, open_store
from guard.config import Settings
from middleware.console._auth import Gate
from middleware.console._integrity import Integrity


@dataclass(slots=True)
class Console:
    """The console's shared parts.

    Args:
        settings: All settings (``console``, ``audit``, ``identity``, ``policy``).
        guard: Decides and records subject look-ups; None until the lifespan starts it.
        gate: Verifies auditors' tokens.
        hmac_key: The trail's subject HMAC key.
        owns_guard: Close the guard when the console stops.
    """

    settings: Settings
    guard: Guard | None
    gate: Gate
    hmac_key: bytes
    owns_guard: bool = False
    last_check: Integrity | None = None
    _store: Store | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self) -> Store:
        """The audit store, opened for reading on first use."""
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings.audit.store, create=False)
            return self._store

    def live_guard(self) -> Guard:
        """The guard; raises RuntimeError before start-up."""
        if self.guard is None:
            raise RuntimeError("the console's guard is not running")
        return self.guard

    def close(self) -> None:
        """Close the store (and the guard, if the console opened it)."""
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
        if self.owns_guard and self.guard is not None:
            self.guard.close()
            self.guard = None
