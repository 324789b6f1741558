"""A store outage does not leave a chain unsigned for good.

A writer that loses its store starts a new chain (it cannot know whether the
failed batch reached the store); once the store is back it closes the abandoned
chain with a signed checkpoint, with or without new traffic. A real PostgreSQL
of this test is stopped and restarted.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from guard import AuditUnavailableError
from guard.audit import open_store
from tests.security.audit_tamper_kit import (
    AuditKeys,
    check,
    event,
    make_keys,
    private_postgres,
    trail,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path)


def _closes(url: str, writer_id: str) -> int:
    store = open_store(url, create=False)
    try:
        return int(store.rows("SELECT count(*) FROM audit_checkpoint "
                              "WHERE writer_id = ? AND kind = 'close'", (writer_id,))[0][0])
    finally:
        store.close()


@pytest.mark.parametrize("traffic_after", [True, False], ids=["traffic", "idle"])
def test_a_chain_abandoned_in_an_outage_is_closed_when_the_store_is_back(
    audit_keys: AuditKeys, tmp_path: Path, traffic_after: bool
) -> None:
    with private_postgres() as pg:
        t = trail(pg.url, audit_keys, timeout=1.0, checkpoint_every=1000,
                  checkpoint_interval=3600.0)
        for i in range(30):
            t.record(event(f"before-{i}"))  # 30 events after the opening checkpoint
        abandoned = t.writer_id
        pg.stop()
        with pytest.raises(AuditUnavailableError):
            t.record(event("during"))
        assert t.writer_id != abandoned
        pg.start()
        if traffic_after:
            t.record(event("after"))
        deadline = time.monotonic() + 30
        while not _closes(pg.url, abandoned) and time.monotonic() < deadline:
            time.sleep(0.1)  # idle: the writer thread closes it on its own
        report = check(pg.url, audit_keys)
        t.close()
        assert _closes(pg.url, abandoned) == 1
        assert report.ok, report.problems
        assert not any(abandoned in note for note in report.notes), report.notes
        final = check(pg.url, audit_keys)
        assert final.ok, final.problems
        assert final.notes == ()
