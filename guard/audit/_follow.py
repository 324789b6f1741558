"""``guard audit index``: every lane of a journal folder indexed from a process of its own.

With ``audit.index = "external"`` the writing processes only append to the
journal; one follower per journal folder (a file lock, ``INDEXER``) runs an
:class:`~guard.audit._indexer.Indexer` per lane, lanes of stopped processes
included. A lane no process holds is opened once first, as a writer would:
its torn tail is cut and its synced end published again (after a power loss
the published end may be older than the synced records).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from guard._errors import AuditUnavailableError
from guard.audit._indexer import Indexer
from guard.audit._journal import Journal, JournalBusyError, durable_end, lock_folder
from guard.audit._jverify import lanes
from guard.audit._store import Store


class Follower:
    """Indexes every lane of a journal folder into a store; one per folder at a time.

    Args:
        folder: The journal folder (its ``lane-N`` journals), or one lane.
        store: The query store.
        interval: Seconds from durable to in the store that each lane's indexer aims at.

    Raises:
        ConfigError: another follower holds the folder, or it cannot be used.
    """

    def __init__(self, folder: Path, store: Store, *, interval: float = 0.3) -> None:
        self.folder = folder
        self.store = store
        self._interval = interval
        self.indexers: dict[Path, Indexer] = {}
        self._lock = lock_folder(folder, "INDEXER",
                                 f"another `guard audit index` is already indexing {folder}")

    def discover(self) -> None:
        """Start indexing the lanes not indexed yet (a lane no process holds is recovered)."""
        for lane in lanes(self.folder):
            if lane not in self.indexers:
                with contextlib.suppress(JournalBusyError):
                    Journal(lane).close()
                self.indexers[lane] = Indexer(lane, self.store, interval=self._interval)

    def progress(self) -> str:
        """Lanes, records durable and not yet in the store, and why, if the store refuses."""
        behind = sum(max(0, durable_end(lane) - ix.offset) for lane, ix in self.indexers.items())
        errors = [ix.last_error for ix in self.indexers.values() if ix.last_error is not None]
        return (f"{len(self.indexers)} lane(s), {behind} record(s) behind"
                + (f"; the store refuses: {errors[0]}" if errors else ""))

    def catch_up(self, timeout: float) -> None:
        """Return once every lane is indexed up to its durable end as of the call.

        Raises:
            AuditUnavailableError: a lane did not get there within ``timeout`` seconds.
        """
        for lane, indexer in self.indexers.items():
            if not indexer.wait(durable_end(lane), timeout):
                raise AuditUnavailableError(
                    f"the audit index of {lane} did not catch up within {timeout:g} s: "
                    f"{indexer.last_error or 'no progress'}")

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the index transactions under way (``timeout`` each), release the folder."""
        for indexer in self.indexers.values():
            indexer.close(timeout, catch_up=False)
        os.close(self._lock)
