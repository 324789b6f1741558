"""The current policy behind one reference: decisions read it, reloads swap it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from guard._errors import ConfigError
from guard._types import Decision, Reason, Request, denial
from guard.engine import SubjectLookup, decide
from guard.policy._compiled import CompiledPolicy

if TYPE_CHECKING:
    from guard.config import PolicySettings
    from guard.policy._pgsource import StartPolicy


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did."""

    ok: bool
    version: str
    previous_version: str
    error: str | None = None

    @property
    def changed(self) -> bool:
        """True when a new version is now in force."""
        return self.ok and self.version != self.previous_version


class PolicyHolder:
    """Holds the policy in force; a reload never replaces a good policy with a bad one.

    Args:
        loader: Builds a CompiledPolicy (e.g. ``lambda: load_policy(path)``). Called
            once now — a failure here is raised, the guard must not start — and
            again on every reload.
        initial: The policy to start with instead of calling ``loader`` now (a
            replica that walked back past stored policies that do not load).
    """

    __slots__ = ("_listeners", "_loader", "_lock", "_policy", "last_error")

    def __init__(
        self, loader: Callable[[], CompiledPolicy], *, initial: CompiledPolicy | None = None
    ) -> None:
        self._loader = loader
        self._policy = initial if initial is not None else loader()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[ReloadResult], None]] = []
        self.last_error: str | None = None

    @property
    def current(self) -> CompiledPolicy:
        """The policy in force."""
        return self._policy

    def decide(self, request: Request, register: SubjectLookup | None = None) -> Decision:
        """Decide against the policy in force (and ``register``); an internal error is a denial."""
        policy = self._policy
        try:
            return decide(policy, request, register)
        except Exception:  # fail closed: never let an error become an allow
            return denial(Reason.INTERNAL_ERROR, request, policy.version)

    def on_reload(self, listener: Callable[[ReloadResult], None]) -> None:
        """Call ``listener`` after every reload attempt, good or bad."""
        self._listeners.append(listener)

    def reload(self, loader: Callable[[], CompiledPolicy] | None = None) -> ReloadResult:
        """Load again (with ``loader`` if given); swap only if the new policy is good."""
        with self._lock:
            previous = self._policy.version
            try:
                fresh = (loader or self._loader)()
            except Exception as exc:  # a bad file, or a bug: keep the last good policy
                self.last_error = str(exc)
                result = ReloadResult(False, previous, previous, str(exc))
            else:
                self._policy = fresh
                self.last_error = None
                result = ReloadResult(True, fresh.version, previous)
        for listener in self._listeners:
            listener(result)
        return result


def holder_for(settings: PolicySettings) -> tuple[PolicyHolder, StartPolicy | None]:
    """A holder loading the configured ``policy.source``, and where a store start began.

    ``files`` loads ``policy.dir`` (else ./policies, else the shipped copy); a
    PostgreSQL URL starts on the newest stored policy that loads (the
    :class:`~guard.policy._pgsource.StartPolicy` says which newer ones it skipped)
    and reloads the newest one; the policy files are not read.

    Args:
        settings: The ``[policy]`` section.

    Raises:
        ConfigError: another source, or a store that cannot be reached or holds no
            policy that loads.
        PolicyLoadError: the policy files have errors.
    """
    source = settings.source
    if source == "files":
        from guard.policy._load import load_policy

        folder = settings.dir
        return PolicyHolder(lambda: load_policy(folder)), None
    from guard.policy._pgsource import is_postgres_url, load_newest_good, load_store_policy

    if not is_postgres_url(source):
        raise ConfigError(f"policy.source must be 'files' or a postgresql:// URL, not {source!r}")
    start = load_newest_good(source)
    return PolicyHolder(lambda: load_store_policy(source), initial=start.policy), start
