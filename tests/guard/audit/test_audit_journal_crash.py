"""SIGKILL while recording through the journal: nothing acknowledged is lost, nothing doubled.

The child rotates segments at every batch (``journal_segment_mb=0``), so the kill
lands around a rotation, and an indexer of its own follows the journal, so it also
lands while indexing. The test then opens the journal again: the torn tail is cut, the index
catches up from its saved offset, and the store holds each journal event once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guard.audit import load_public_key, open_store
from guard.audit._jverify import verify_journal
from tests.guard.audit.conftest import (
    CHAIN_KEY,
    Keys,
    acknowledged_until_killed,
    assert_lost_none_doubled_none,
    make_trail,
    trail_settings,
)

CHILD = r"""
import asyncio, sys, threading
from pathlib import Path
from guard.audit import EventKind, JournalTrail
from guard.audit._indexer import Indexer
from guard.config import AuditSettings

url, key, hmac, folder = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
trail = JournalTrail(AuditSettings(
    store=url, signing_key=key, hmac_key=hmac, journal=folder, checkpoint_every=50,
    index="external").model_copy(update={"journal_segment_mb": int(sys.argv[5])}))
indexer = Indexer(trail.journal.folder, trail.store)  # behind the journal, in this process
out = threading.Lock()

def say(event_id):
    with out:
        sys.stdout.write(event_id + "\n")
        sys.stdout.flush()

def fields(n, i):
    return {"caller": f"svc:{n}", "purpose": "p", "categories": ("c",), "allowed": True,
            "reason": "allowed", "subject_id": f"{n}-{i}"}

def work(n):
    i = 0
    while True:
        say(trail.record_fields(EventKind.DECISION, fields(n, i)))
        i += 1

async def one(n):
    i = 0
    while True:
        say(await trail.start_fields(EventKind.DECISION, fields(n, i)))
        i += 1

async def loop():
    await asyncio.gather(*(one(100 + n) for n in range(32)))

for n in range(8):
    threading.Thread(target=work, args=(n,), daemon=True).start()
asyncio.run(loop())
"""


@pytest.mark.parametrize("segment_mb", [0, 1], ids=["rotate-every-batch", "one-mib"])
def test_sigkill_loses_no_acknowledged_event_and_indexes_each_once(
    store_url: str, keys: Keys, tmp_path: Path, segment_mb: int
) -> None:
    folder = tmp_path / "journal"
    hmac = trail_settings(store_url, keys).hmac_key
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, store_url, str(keys.signing), str(hmac), str(folder),
         str(segment_mb)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    acknowledged = acknowledged_until_killed(child, 600)

    trail = make_trail(store_url, keys, journal=folder)  # recovery: cut, then catch up
    trail.flush()
    trail.close()
    assert_lost_none_doubled_none(folder / "lane-0", store_url, acknowledged, keys)
    store = open_store(store_url, create=False)  # the journal too: whole, and the index agrees
    report = verify_journal(store, folder, load_public_key(keys.public), chain_key=CHAIN_KEY)
    store.close()
    assert report.ok, (report.damage, report.index, report.journal.problems)
