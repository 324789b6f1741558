"""Audit health: failures logged with their cause (rate-limited), and a free-space reserve
that refuses writes before callers fill the journal's disk."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

_log = logging.getLogger("guard.audit")

class FailureLog:
    """Logs the failures of one audit component (``what``, as the lines name it): the first
    at once, then at most one line per ``interval`` seconds with their count and the
    latest cause, then the recovery once."""

    def __init__(self, what: str, *, interval: float = 60.0) -> None:
        self.what = what
        self._interval = interval
        self._lock = threading.Lock()
        self.cause: str | None = None  # the latest failure's; None while working
        self.failing_since: float | None = None  # monotonic; None while working
        self.ok_at: float | None = None  # monotonic, of the latest success
        self._count = 0  # failures in the current run
        self._unlogged = 0  # ... since the last line
        self._logged_at = 0.0

    @property
    def failing(self) -> bool:
        """True from a failure until the next success."""
        return self.failing_since is not None

    def failed(self, cause: str) -> None:
        """Count one failure; log it if it is the first, or if the interval has passed."""
        now = time.monotonic()
        with self._lock:
            self.cause = cause
            self._count += 1
            self._unlogged += 1
            if self.failing_since is None:
                self.failing_since = self._logged_at = now
                self._unlogged = 0
                _log.error("%s failed: %s", self.what, cause)
            elif now - self._logged_at >= self._interval:
                _log.error(
                    "%s still failing: %d more failure(s) in the last %.0f s, %d since %.0f s "
                    "ago; latest: %s", self.what, self._unlogged, now - self._logged_at,
                    self._count, now - self.failing_since, cause)
                self._logged_at, self._unlogged = now, 0

    def succeeded(self) -> None:
        """Note a success; log the recovery if it ends a run of failures."""
        now = time.monotonic()
        with self._lock:
            self.ok_at = now
            if self.failing_since is None:
                return
            _log.warning(
                "%s works again after %d failure(s) over %.1f s", self.what, self._count,
                now - self.failing_since)
            self.failing_since = self.cause = None
            self._count = self._unlogged = 0


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


class DiskReserve:
    """Free space (``reserve_bytes``; 0: no check) audit writes must leave on the filesystem
    of ``path`` (a file or folder), read by ``statvfs`` at most every ``every`` seconds, not
    per event; each change of state logged once. ``ahead``: bytes the writer may take
    besides those it counts (the zeros a journal grows ahead of its records), kept free
    on top of the reserve."""

    def __init__(self, path: Path, reserve_bytes: int, *, every: float = 0.25,
                 ahead: int = 0) -> None:
        self.folder = path.parent if not path.is_dir() else path
        self.reserve_bytes = reserve_bytes
        self._ahead = ahead if reserve_bytes > 0 else 0
        self._every = every
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._shortfall: str | None = None
        self._free = 0  # the last reading, less the bytes admitted since

    def shortfall(self, size: int = 0) -> str | None:
        """Why writes must stop now (too little free space), or None when there is enough.

        ``size`` bytes about to be written are refused when they would take the free space
        below the reserve; once admitted they count against the reading until the next
        one (so batches between two readings cannot pass it together).
        """
        if self.reserve_bytes <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < self._every:
                return self._admit(self._shortfall, size)
            self._read_at = now
            before = self._shortfall
            try:
                stat = os.statvfs(self.folder)
            except OSError as exc:  # fail closed: space that cannot be measured is not there
                why: str | None = f"cannot read the free space of {self.folder}: {exc}"
            else:
                free = self._free = stat.f_bavail * stat.f_frsize
                why = (
                    f"the audit filesystem of {self.folder} has {_mb(free)} free, below the "
                    f"reserve of {_mb(self.reserve_bytes)} (audit.reserve_mb){self._plus()}"
                    if free < self.reserve_bytes + self._ahead else None
                )
            self._shortfall = why
            if why is not None and before is None:
                _log.error("%s: refusing audit writes, so requests are denied, until space "
                           "is freed", why)
            elif why is None and before is not None:
                _log.warning("the audit filesystem of %s has room again (reserve %s): "
                             "accepting audit writes", self.folder, _mb(self.reserve_bytes))
            return self._admit(why, size)

    def _admit(self, why: str | None, size: int) -> str | None:
        """``why``, or why ``size`` more bytes would pass the reserve (else they are counted)."""
        if why is not None or not size:
            return why
        if self._free - size < self.reserve_bytes + self._ahead:
            return (f"the audit filesystem of {self.folder} has {_mb(self._free)} free: "
                    f"{_mb(size)} more would pass the reserve of {_mb(self.reserve_bytes)} "
                    f"(audit.reserve_mb){self._plus()}")
        self._free -= size
        return None

    def _plus(self) -> str:
        """What the reserve keeps on top of ``audit.reserve_mb``, for the messages."""
        return f" and the {_mb(self._ahead)} the journal grows ahead" if self._ahead else ""
