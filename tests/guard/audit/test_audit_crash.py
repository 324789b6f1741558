"""SIGKILL while recording: every acknowledged event is in the store and the chain verifies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from guard.audit import load_public_key, open_store, verify
from tests.guard.audit.conftest import CHAIN_KEY, Keys, acknowledged_until_killed

CHILD = r"""
import sys, threading
from pathlib import Path
from guard.audit import AuditPipeline, AuditTrail, EventKind, load_signing_key, open_store

url, key = sys.argv[1], Path(sys.argv[2])
trail = AuditTrail(open_store(url), load_signing_key(key), checkpoint_every=50)
pipeline = AuditPipeline(b"k" * 32)
out = threading.Lock()

def work(n):
    i = 0
    while True:
        event = pipeline.event(EventKind.DECISION, caller=f"svc:{n}", purpose="p",
                               categories=("c",), allowed=True, reason="allowed",
                               subject_id=f"{n}-{i}")
        trail.record(event)
        with out:
            sys.stdout.write(event.event_id + "\n")
            sys.stdout.flush()
        i += 1

for n in range(8):
    threading.Thread(target=work, args=(n,), daemon=True).start()
threading.Event().wait()
"""


def test_sigkill_loses_no_acknowledged_event(store_url: str, keys: Keys, tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, store_url, str(keys.signing)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    acknowledged = acknowledged_until_killed(child, 400)
    store = open_store(store_url, create=False)
    stored = {row[0] for row in store.rows("SELECT event_id FROM audit_event")}
    report = verify(store, load_public_key(keys.public), chain_key=CHAIN_KEY)
    store.close()
    missing = [i for i in acknowledged if i not in stored]
    assert missing == []
    assert report.ok, report.problems
