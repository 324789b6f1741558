"""SIGKILL while recording through the journal: nothing acknowledged is lost, nothing doubled.

The child rotates segments at every batch (``segment_bytes=1``), so the kill lands
around a rotation, and its index runs behind the journal, so it also lands while
indexing. The test then opens the journal again: the torn tail is cut, the index
catches up from its saved offset, and the store holds each journal event once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guard.audit import load_public_key, load_signing_key, open_store
from guard.audit._jtrail import JournalTrail
from guard.audit._jverify import verify_journal
from tests.guard.audit.conftest import (
    CHAIN_KEY,
    HMAC_KEY,
    Keys,
    acknowledged_until_killed,
    assert_lost_none_doubled_none,
)

CHILD = r"""
import asyncio, sys, threading
from pathlib import Path
from guard.audit import EventKind, load_signing_key, open_store
from guard.audit._jtrail import JournalTrail

url, key, folder, segment = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
trail = JournalTrail(open_store(url), load_signing_key(key), hmac_key=b"k" * 32,
                     journal=folder, checkpoint_every=50, segment_bytes=segment)
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


@pytest.mark.parametrize("segment", [1, 1 << 20], ids=["rotate-every-batch", "one-mib"])
def test_sigkill_loses_no_acknowledged_event_and_indexes_each_once(
    store_url: str, keys: Keys, tmp_path: Path, segment: int
) -> None:
    folder = tmp_path / "journal"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, store_url, str(keys.signing), str(folder), str(segment)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    acknowledged = acknowledged_until_killed(child, 600)

    trail = JournalTrail(open_store(store_url), load_signing_key(keys.signing),
                         hmac_key=HMAC_KEY, journal=folder)  # recovery: cut, then catch up
    trail.flush()
    trail.close()
    assert_lost_none_doubled_none(folder / "lane-0", store_url, acknowledged, keys)
    store = open_store(store_url, create=False)  # the journal too: whole, and the index agrees
    report = verify_journal(store, folder, load_public_key(keys.public), chain_key=CHAIN_KEY)
    store.close()
    assert report.ok, (report.damage, report.index, report.journal.problems)
