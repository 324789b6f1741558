"""Thirteenth review: when a register entry was recorded is checked by verify too.

A subject's right-of-access report and ``guard subject show`` give each rights request's
``recorded_at`` from the register's row. Verify compared the row with its chained
``subject_right`` event on everything else, so a writer to the store could move an
erasure request or an objection to another day (the person's report then says the
company had it later, or earlier, than it had) with verify saying intact; and the value
reached the privacy team's terminal as stored, escape sequences and all. The event now
holds when the entry was recorded, verify compares it, and ``guard subject show``
writes the row's text with its control characters escaped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guard.audit.conftest import sql
from tests.security import clikit

SUBJECT = "cust-0046"


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str) -> tuple[int, str]:
    """``guard ARGS`` in-process with an empty stdin; (exit code, stdout)."""
    code, out, _err = clikit.run(monkeypatch, capsys, *args, stdin=b"")
    return code, out


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_dir: Path,
       capsys: pytest.CaptureFixture[str]) -> Path:
    monkeypatch.chdir(policy_dir.parent)
    path = clikit.cli_store(tmp_path, monkeypatch)
    assert run(monkeypatch, capsys, "subject", "erase", SUBJECT, "--ref", "T-1")[0] == 0
    assert run(monkeypatch, capsys, "audit", "verify")[0] == 0
    return path


def test_an_entry_moved_to_another_time_is_named_by_verify(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sql(db, "UPDATE subject_register SET recorded_at = '2031-01-01T09:00:00.000000Z'")
    code, out = run(monkeypatch, capsys, "audit", "verify")
    # Before: 0, intact.
    assert code == 1, out
    assert "altered: writer (register)" in out


def test_subject_show_writes_the_stores_text_without_terminal_controls(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sql(db, "UPDATE subject_register SET recorded_at = 'x' || char(27) || '[2J', "
            "recorded_by = 'cli:' || char(27) || ']8;;http://evil/' || char(7)")
    code, out = run(monkeypatch, capsys, "subject", "show", SUBJECT)
    assert code == 0, out
    # Before: the escape and bell bytes themselves.
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "x\\x1b[2J" in out
