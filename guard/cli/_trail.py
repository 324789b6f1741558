"""The audit trail of a short command: no index process; its events indexed before it returns.

A service's trail (``audit.index = "auto"``) starts a child process that
follows the journal into the store; for a command that records a few events and
exits, starting that child costs more than everything else it does. A command's
trail starts none: at its end the command indexes its own lane in-process, or,
when a service's indexer already follows the journal folder (its ``INDEXER``
lock is held), waits until that indexer has read the lane. Either way the events
are in the store when the command returns, as before; when the index cannot get
there in time they stay durable in the journal and the next indexer reads them.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from guard._errors import AuditUnavailableError, GuardError
from guard.audit import JournalTrail
from guard.audit._indexer import Indexer
from guard.audit._journal import JournalBusyError, durable_end, lock_folder
from guard.audit._jtrail import wait_store
from guard.audit._store import open_store
from guard.config import AuditSettings

_log = logging.getLogger("guard.audit")

INDEX_TIMEOUT = 30.0
"""Seconds a command waits at its end for its events to reach the store."""


@contextlib.contextmanager
def command_trail(settings: AuditSettings) -> Iterator[JournalTrail]:
    """A trail for one command; its events are in the store once the ``with`` ends.

    Args:
        settings: The ``[audit]`` settings (``index = "auto"`` starts no child process
            here: the command indexes its lane at its end).
    """
    child = settings.index == "auto"
    trail = JournalTrail(settings.model_copy(update={"index": "external"}))
    lane, key = trail.journal.folder, trail.journal.journal_id
    try:
        yield trail
    finally:
        trail.close()
        if child:
            index_lane(settings.store, lane, key)


def index_lane(store_url: str, lane: Path, key: str, timeout: float = INDEX_TIMEOUT) -> bool:
    """Index one closed lane up to its durable end; True once the store holds it.

    Indexed here when no other indexer holds the journal folder; otherwise the one
    that does is waited for (it looks for new lanes every second).

    Args:
        store_url: The query store.
        lane: The lane (a journal folder of one writer, closed).
        key: The lane's journal id.
        timeout: Seconds to wait for the store.
    """
    end = durable_end(lane)
    try:
        store = open_store(store_url, create=True)
    except GuardError as exc:
        _log.warning("audit events stay in the journal until the next index: %s", exc)
        return False
    try:
        try:
            lock = lock_folder(lane.parent, "INDEXER", "")
        except JournalBusyError:  # a service's indexer follows the folder: it reads this lane
            wait_store(store, {key: end}, timeout)
            return True
        try:
            indexer = Indexer(lane, store)
            indexer.close(timeout)
            if indexer.offset < end:
                raise AuditUnavailableError(
                    f"the audit index did not read {lane} within {timeout:g} s: "
                    f"{indexer.failures.cause or 'no progress'}")
        finally:
            os.close(lock)
        return True
    except GuardError as exc:
        _log.warning("audit events stay in the journal until the next index: %s", exc)
        return False
    finally:
        store.close()
