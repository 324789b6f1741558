"""A register row the guard never wrote stops nothing but its own subject, and no traceback.

A writer to the store can leave a ``subject_register`` row that is no entry (an unknown
kind, a ``seq`` or a day that is no number or date). Every command reading the register
(``guard subject show``/``erase``/..., ``guard audit report``) stopped with a
traceback, and a running guard on SQLite, which follows the entries other processes
record by polling, failed on that row at every poll, logging a traceback four times a
second and applying no later change of any subject: an erasure the privacy team
recorded with ``guard subject erase`` was never enforced by the running service. Now
such a row is one line (exit 2) and the running guard keeps following every other
subject, keeping that one's last state read and saying so in its status.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from guard.policy import load_policy
from guard.rights import Change, EntryKind, Register
from tests.guard.audit.conftest import sql
from tests.security import clikit

SUBJECT = "cust-0044"
OTHER = "cust-0045"
KEY = b"k" * 32
POLICY = load_policy(None)


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str) -> tuple[int, str, str]:
    return clikit.run(monkeypatch, capsys, *args, stdin=b"")


BROKEN = ["kind = 'nonsense'", "seq = 'x'", "effective = '2026-13-45'", "effective = 7"]


@pytest.mark.parametrize("change", BROKEN)
def test_commands_reading_a_broken_row_say_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_dir: Path,
        capsys: pytest.CaptureFixture[str], change: str) -> None:
    monkeypatch.chdir(policy_dir.parent)
    db = clikit.cli_store(tmp_path, monkeypatch)
    assert run(monkeypatch, capsys, "subject", "restrict", SUBJECT, "--ref", "T-1")[0] == 0
    sql(db, f"UPDATE subject_register SET {change}")
    commands = [["subject", "show", SUBJECT], ["subject", "erase", SUBJECT, "--ref", "T-2"]]
    if change.startswith("seq"):
        commands.append(["audit", "report", "--subject", SUBJECT])
    for command in commands:
        code, out, err = run(monkeypatch, capsys, *command)
        # Before: a ValueError's traceback.
        assert code == 2, (command, out, err)
        assert "Traceback" not in err
        assert "guard audit verify" in err
        assert len(err.strip().splitlines()) == 1, err


def _eventually(check: object, seconds: float = 10.0) -> bool:
    """Whether ``check()`` becomes true within a generous deadline (no timing assert)."""
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _record(register: Register, kind: EntryKind, subject: str) -> None:
    register.record(Change(subject, kind, "", None, "T-1", "test"), POLICY,
                    lambda _kind, _fields: "event-1")


def test_a_running_guard_follows_other_changes_past_a_broken_row(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    url = f"sqlite:///{db}"
    running = Register.open(url, KEY, watch=True)
    elsewhere = Register.open(url, KEY)  # the privacy team's `guard subject ...`
    try:
        _record(elsewhere, EntryKind.RESTRICTION, SUBJECT)
        assert _eventually(lambda: running.lookup(SUBJECT) is not None)
        sql(db, "INSERT INTO subject_register SELECT subject, seq + 1, 'broken', 'nonsense', "
                 "purpose, effective, recorded_at, recorded_by, ref, event_id "
                 "FROM subject_register")
        _record(elsewhere, EntryKind.ERASURE_REQUESTED, OTHER)
        # Before: never; the poll failed on the broken row for ever.
        assert _eventually(lambda: running.lookup(OTHER) is not None)
        assert running.status()["unreadable_rows"] is True
        assert running.unreadable == running.pseudonym(SUBJECT)
        assert running.lookup(SUBJECT) is not None  # its last state read, kept
    finally:
        running.close()
        elsewhere.close()
