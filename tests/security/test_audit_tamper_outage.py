"""A store outage neither refuses decisions nor leaves a chain unsigned.

The journal is the durable record: while the store (the index) is down, events
are still appended to the same chain, and once the store is back the index
catches up with every one of them, so verify finds the chain whole and signed.
A real PostgreSQL of this test is stopped and restarted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.audit import EventKind, open_store
from tests.security.audit_tamper_kit import (
    AuditKeys,
    check,
    event,
    make_keys,
    private_postgres,
    record_event,
    trail,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path)


def test_an_outage_of_the_store_delays_the_index_and_loses_nothing(
    audit_keys: AuditKeys, tmp_path: Path
) -> None:
    with private_postgres() as pg:
        t = trail(pg.url, audit_keys, timeout=1.0, checkpoint_every=1000,
                  checkpoint_seconds=3600.0)
        for i in range(30):
            record_event(t, event(f"before-{i}"))
        writer = t.writer_id
        pg.stop()
        during = [t.record_fields(EventKind.DECISION, {"subject_id": f"during-{i}"})
                  for i in range(5)]  # durable in the journal: not refused
        assert t.writer_id == writer  # no chain abandoned
        pg.start()
        t.flush()  # the index catches up with the journal
        t.close()
        store = open_store(pg.url, create=False)
        try:
            marks = ", ".join("?" * len(during))
            found = store.rows(f"SELECT count(*) FROM audit_event WHERE event_id IN ({marks})",
                               tuple(during))
            chains = store.rows("SELECT count(DISTINCT writer_id) FROM audit_event")
        finally:
            store.close()
        assert found == [(5,)]
        assert chains == [(1,)]
        final = check(pg.url, audit_keys)
        assert final.ok, final.problems
        assert final.notes == ()
