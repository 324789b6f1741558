"""``wait_indexed`` hurries the service's child indexer: it does not wait for the child's pace.

The child is started with a pace of an hour (``ChildIndexer(interval=3600)``), so
its indexers start no transaction of their own during the test; the events get
into the store only if ``wait_indexed``'s hurry (``guard.audit._follow.hurry``:
a line to the child's standard input) reaches the child and its indexers.
Without the hurry ``wait_indexed`` runs out of its timeout.
"""

from __future__ import annotations

from pathlib import Path

from guard.audit import EventKind, JournalTrail, open_store, wait_indexed
from guard.audit._follow import ChildIndexer
from guard.audit._jtrail import journal_folder
from guard.config import AuditSettings
from tests.guard.audit.conftest import Keys

FIELDS = {"caller": "svc:crm", "purpose": "p", "categories": ("c",), "allowed": True,
          "reason": "allowed", "subject_id": "cust-1"}


def test_wait_indexed_hurries_the_child_rather_than_waiting_its_pace(
    keys: Keys, tmp_path: Path
) -> None:
    config = AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}", signing_key=keys.signing,
                           hmac_key=tmp_path / "hmac.key", index="external")
    trail = JournalTrail(config)  # "external": it starts no child; ours follows below
    for _ in range(7):
        trail.record_fields(EventKind.DECISION, FIELDS)
    trail.close()  # every event durable in the journal, none in the store yet
    child = ChildIndexer(journal_folder(config), config.store, interval=3600.0)
    try:
        wait_indexed(config, timeout=30.0)  # the pace alone: an hour
        store = open_store(config.store, create=False)
        try:
            assert store.rows("SELECT count(*) FROM audit_event") == [(7,)]
        finally:
            store.close()
        assert child.restarts == 0
        assert child.last_error is None
    finally:
        child.close()
