"""Fourth review: the child indexer runs the guard's code, and only the guard's.

At SQLite the audit trail indexes its journal in a child process
(``audit.index = "auto"``, ``guard.audit._follow.ChildIndexer``), started as
``python -m guard.audit._follow``. Python puts the working folder first on the module
path of such a program, so a local user who may write to the folder the service was
started from (``/tmp``, a shared deployment folder) could have the child, which
holds the audit store, import a module of theirs under a standard library name.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from guard.audit import AuditEvent, EventKind, JournalTrail, wait_indexed
from guard.audit._ids import new_event_id
from guard.config import AuditSettings
from tests.guard.audit.conftest import record

PLANTED = '''
import sys
open({marker!r}, "w").write("ran in the indexer")
sys.path.pop(0)                 # then the real module, so the child goes on as before
del sys.modules["logging"]
import logging as _real
sys.modules["logging"] = _real
sys.path.insert(0, "")
'''


def test_the_child_indexer_imports_nothing_from_the_working_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "marker"
    (work / "logging.py").write_text(PLANTED.format(marker=str(marker)))
    monkeypatch.chdir(work)
    settings = AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                             hmac_key=tmp_path / "subject-hmac.key",
                             signing_key=tmp_path / "audit-signing.key", writer_id="red4")
    assert settings.index == "auto"
    with JournalTrail(settings) as trail:
        assert trail.child is not None  # the child process indexes
        event_id = record(trail, AuditEvent(event_id=new_event_id(), kind=EventKind.HEARTBEAT,
                                            ts="2026-11-30T07:00:00.000000Z"))
        wait_indexed(settings)  # the child ran: it indexed the event
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        assert conn.execute("SELECT count(*) FROM audit_event WHERE event_id = ?",
                            (event_id,)).fetchone() == (1,)
    assert not marker.exists(), "the child indexer ran a module from the working folder"
