"""What a writer to the audit store wrote never drives the auditor's terminal in verify.

``guard audit verify`` is the auditor's check against exactly that attacker, and each
problem line names the chain (its writer id) and events as the store holds them. A
writer to the store inserted an event under a writer id holding terminal controls:
verify named it, raw, and the controls erased the line and wrote ``intact: ...`` in its
place, then hid the rest (``ESC[8m``), so the auditor read an intact store (the exit
status still said 1). Every line verify prints now shows controls as escapes.
"""

from __future__ import annotations

import io
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.security import clikit

FORGED = "\r\x1b[2Kintact: 12 event(s) in 1 chain(s), 2 signed checkpoint(s)\n\x1b[8m"
RECORD = ["subject", "object", "cust-0042", "--purpose", "marketing", "--ref", "T-7"]


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str) -> tuple[int, str]:
    """``guard ARGS`` in-process with an empty stdin; (exit code, stdout and stderr)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, out, err = clikit.run(monkeypatch, capsys, *args)
    return code, out + err


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_dir: Path) -> Path:
    monkeypatch.chdir(policy_dir.parent)
    return clikit.cli_store(tmp_path, monkeypatch)


def _plant(path: Path, column: str, value: str) -> None:
    """Copy one stored event under another ``column`` value, as SQL on the store can."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("CREATE TEMP TABLE planted AS SELECT * FROM audit_event LIMIT 1")
            conn.execute("UPDATE planted SET event_id = 'planted-1', seq = seq + 1")
            conn.execute(f"UPDATE planted SET {column} = ?", (value,))
            conn.execute("INSERT INTO audit_event SELECT * FROM planted")
    finally:
        conn.close()


@pytest.mark.parametrize("column", ["writer_id", "event_id"])
def test_a_planted_id_never_reaches_the_terminal_as_controls(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        column: str) -> None:
    assert run(monkeypatch, capsys, *RECORD)[0] == 0
    code, out = run(monkeypatch, capsys, "audit", "verify")
    assert code == 0, out
    _plant(db, column, FORGED)
    code, out = run(monkeypatch, capsys, "audit", "verify")
    assert code == 1
    assert "\x1b" not in out
    assert "\r" not in out
    assert "\\x1b[2Kintact" in out  # shown, as an escape
    assert out.count("\n") == len(out.splitlines())  # no line of the attacker's own
    assert out.splitlines()[-1].startswith("TAMPERED")
