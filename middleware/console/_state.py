"""What the console's views share: settings, the guard, the store, the sign-in gate."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from guard import Guard
from guard.audit import Store, open_store
from guard.config import Settings
from middleware.console._auth import Gate
from middleware.console._integrity import Integrity
from middleware.console._oidc import OidcSignIn


@dataclass(slots=True)
class Console:
    """The console's shared parts.

    Args:
        settings: All settings (``console``, ``audit``, ``identity``, ``policy``).
        guard: Decides and records subject look-ups; None until the lifespan starts it.
        gate: Verifies auditors' tokens.
        hmac_key: The trail's subject HMAC key.
        owns_guard: Close the guard when the console stops.
        oidc: The OIDC sign-in, when a provider is configured.
    """

    settings: Settings
    guard: Guard | None
    gate: Gate
    hmac_key: bytes
    owns_guard: bool = False
    oidc: OidcSignIn | None = None
    last_check: Integrity | None = None
    checking_since: str | None = None
    _store: Store | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def store(self) -> Store:
        """The audit store, opened for reading on first use."""
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings.audit.store, create=False)
            return self._store

    def start_check(self) -> None:
        """Verify the trail in a background thread (one at a time); the result lands in
        ``last_check``. At millions of events a check takes minutes, so no page waits."""
        from guard.audit._event import utc_now
        from middleware.console._integrity import check

        with self._lock:
            if self.checking_since is not None:
                return
            self.checking_since = utc_now()

        def run() -> None:
            try:
                self.last_check = check(self.store(), self.settings.audit.signing_key,
                                        self.hmac_key)
            except Exception as exc:  # shown on the page; the check itself must not crash
                self.last_check = Integrity(utc_now(), False, 0, 0, (), (),
                                            f"the check failed: {exc}")
            finally:
                self.checking_since = None

        threading.Thread(target=run, name="guard-console-verify", daemon=True).start()

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
