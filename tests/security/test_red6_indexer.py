"""Sixth review: the child indexer is as isolated from the environment as the service.

A service started with ``python -I`` (or ``-E``, ``-s``) ignores ``PYTHONPATH``,
``PYTHONHOME``, ``PYTHONSTARTUP``-style variables and the user's site folder: it is
run that way so that whoever can set its environment (a platform's per-tenant
variables, a shared unit file's drop-in) cannot have it import their code. The child
indexer (``audit.index = "auto"`` at SQLite) was started as ``python -P -m
guard.audit._follow`` whatever the service's flags, so it honoured them: a
``sitecustomize.py`` on a ``PYTHONPATH`` the service ignored ran inside the child,
which holds the audit store. The child now starts with the service's isolation
flags. Each service here is a real ``python -I`` process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SERVICE = '''
import sqlite3, sys
from pathlib import Path
from guard.audit import AuditEvent, EventKind, JournalTrail, wait_indexed
from guard.audit._ids import new_event_id
from guard.config import AuditSettings

base = Path(sys.argv[1])
settings = AuditSettings(store=f"sqlite:///{base / 'audit.db'}",
                         hmac_key=base / "subject-hmac.key",
                         signing_key=base / "audit-signing.key", writer_id="red6")
assert settings.index == "auto"
assert "planted" not in sys.modules  # the service itself ignores PYTHONPATH
with JournalTrail(settings) as trail:
    assert trail.child is not None
    fields = AuditEvent(event_id=new_event_id(), kind=EventKind.HEARTBEAT,
                        ts="2026-11-30T13:00:00.000000Z").to_dict()
    for name in ("writer_id", "seq", "prev_hash", "hash"):
        del fields[name]
    event_id = trail.record_fields(EventKind.HEARTBEAT, fields)
    wait_indexed(settings)
with sqlite3.connect(base / "audit.db") as conn:
    found = conn.execute("SELECT count(*) FROM audit_event WHERE event_id = ?",
                         (event_id,)).fetchone()
print("indexed", found[0])
'''


def test_the_child_indexer_keeps_the_services_isolation(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "marker"
    (planted / "sitecustomize.py").write_text(
        f"open({str(marker)!r}, 'a').write('ran in a guard process\\n')\n")
    env = {**os.environ, "PYTHONPATH": str(planted)}
    done = subprocess.run([sys.executable, "-I", "-c", SERVICE, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["indexed", "1"]  # the child ran, and indexed the event
    assert not marker.exists(), "the child indexer ran code from a PYTHONPATH the service ignores"
