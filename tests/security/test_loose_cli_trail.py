"""A short command's audit trail starts no index process, and its events are queryable at once.

``guard subject ...`` records its change (or each printed decision) through an
audit trail. At SQLite the service default (``audit.index = "auto"``) would start
a child process to index the journal, which costs a short command most of its
time; a command indexes its own lane at its end instead, or waits for a
service's indexer that already follows the journal folder. Either way the event
is in the store when the command returns. Real SQLite, the real journal, the
command run in-process; the child's start is watched (``ChildIndexer._spawn``,
called through), never replaced.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guard.audit import JournalTrail
from guard.audit._follow import ChildIndexer
from guard.audit._journal import JournalBusyError, lock_folder
from guard.config import AuditSettings
from tests.security.clikit import run

SUBJECT = "cust-0042"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_dir: Path) -> Path:
    monkeypatch.chdir(policy_dir.parent)
    db = tmp_path / "audit.db"
    monkeypatch.setenv("GUARD_AUDIT__STORE", f"sqlite:///{db}")
    monkeypatch.setenv("GUARD_AUDIT__HMAC_KEY", str(tmp_path / "hmac.key"))
    monkeypatch.setenv("GUARD_AUDIT__SIGNING_KEY", str(tmp_path / "signing.key"))
    return db


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The index child processes started meanwhile (their pids)."""
    started: list[int] = []
    spawn: Callable[[ChildIndexer], Any] = ChildIndexer._spawn

    def watched(self: ChildIndexer) -> Any:
        proc = spawn(self)
        started.append(proc.pid)
        return proc

    monkeypatch.setattr(ChildIndexer, "_spawn", watched)
    return started


def _run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run(monkeypatch, capsys, *args)
    assert (code, err) == (0, ""), (code, err)
    return out


def _stored(db: Path, kind: str) -> list[str]:
    """The events of ``kind`` in the store now (no wait for the index)."""
    with sqlite3.connect(db) as conn:
        return [str(r[0]) for r in conn.execute(
            "SELECT reason FROM audit_event WHERE kind = ?", (kind,))]


def test_a_subject_command_starts_no_index_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path,
    spawned: list[int],
) -> None:
    out = _run(monkeypatch, capsys, "subject", "object", SUBJECT, "--purpose", "marketing")
    assert out.startswith("recorded objection to marketing")
    assert spawned == []
    assert _stored(store, "subject_right") == ["objection"]  # queryable when it returns
    _run(monkeypatch, capsys, "subject", "consent", SUBJECT, "--purpose", "marketing.advertising")
    assert spawned == []
    assert sorted(_stored(store, "subject_right")) == ["consent_granted", "objection"]


def _held_by_its_child(folder: Path) -> None:
    """Return once another process holds the folder's INDEXER lock."""
    deadline = time.monotonic() + 30
    while True:
        try:
            fd = lock_folder(folder, "INDEXER", "")
        except JournalBusyError:
            return
        os.close(fd)
        assert time.monotonic() < deadline, "the service's index child never took the folder"
        time.sleep(0.02)


def test_beside_a_service_indexing_the_folder_the_command_waits_for_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: Path,
    spawned: list[int], tmp_path: Path,
) -> None:
    """A service's child holds the journal folder: the command's lane is indexed by it."""
    service = JournalTrail(AuditSettings(
        store=f"sqlite:///{store}", hmac_key=tmp_path / "hmac.key",
        signing_key=tmp_path / "signing.key"))
    try:
        assert len(spawned) == 1  # the service's own child, as before
        _held_by_its_child(service.journal.folder.parent)
        _run(monkeypatch, capsys, "subject", "object", SUBJECT, "--purpose", "marketing")
        assert len(spawned) == 1
        assert _stored(store, "subject_right") == ["objection"]
    finally:
        service.close()
