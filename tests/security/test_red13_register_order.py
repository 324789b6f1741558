"""A subject's register entries put in another order are named by verify.

The guard folds a subject's register rows in ``seq`` order: a later entry supersedes an
earlier one of its kind. Verify compared each row with its chained ``subject_right``
event (subject, kind, purpose, day, who, reference, event id) but not its place, so a
writer to the store who swapped the ``seq`` of a consent and of its withdrawal put the
consent back in force, and ``guard audit verify`` said the store was intact. A row whose
``seq`` is no number went unnamed too (and stopped every command reading the register).
Now a subject's rows must follow their events' order, and each place must be a number.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.guard.audit.conftest import sql
from tests.security import clikit

SUBJECT = "cust-0043"
CHECK = ["check", "--caller", "svc:marketing", "--purpose", "marketing.third_party",
         "--category", "contact.email", "--subject", SUBJECT]


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str) -> tuple[int, str]:
    """``guard ARGS`` in-process with an empty stdin; (exit code, stdout)."""
    code, out, _err = clikit.run(monkeypatch, capsys, *args, stdin=b"")
    return code, out


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_dir: Path,
       capsys: pytest.CaptureFixture[str]) -> Path:
    """An SQLite store the CLI is pointed at: a consent, then its withdrawal, enforced."""
    monkeypatch.chdir(policy_dir.parent)
    path = clikit.cli_store(tmp_path, monkeypatch)
    consent = ["subject", "consent", SUBJECT, "--purpose", "marketing.third_party"]
    assert run(monkeypatch, capsys, *consent)[0] == 0
    assert run(monkeypatch, capsys, *CHECK)[0] == 0  # consent granted: allowed
    assert run(monkeypatch, capsys, *consent, "--withdraw")[0] == 0
    assert run(monkeypatch, capsys, *CHECK)[0] == 1  # withdrawn: refused
    return path


def test_a_withdrawal_put_before_its_consent_is_named_by_verify(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sql(db, "UPDATE subject_register SET seq = 10 WHERE seq = 1")  # the two swapped
    sql(db, "UPDATE subject_register SET seq = 1 WHERE seq = 2")
    sql(db, "UPDATE subject_register SET seq = 2 WHERE seq = 10")
    assert run(monkeypatch, capsys, *CHECK)[0] == 0  # the attack: the consent in force again
    code, out = run(monkeypatch, capsys, "audit", "verify")
    # Before: 0, "intact".
    assert code == 1, out
    assert "reordered: writer (register)" in out
    assert "(consent_granted, seq 2)" in out


@pytest.mark.parametrize("seq", ["'x'", "0.5", "x'01'"])
def test_a_place_that_is_no_number_is_named_by_verify(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        seq: str) -> None:
    sql(db, f"UPDATE subject_register SET seq = {seq} WHERE seq = 1")
    code, out = run(monkeypatch, capsys, "audit", "verify")
    # Before: 0, "intact".
    assert code == 1, out
    assert "altered: writer (register)" in out
    assert "that is no number" in out


def test_entries_renumbered_in_their_order_are_intact(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The order is what the guard enforces; numbers that keep it change nothing."""
    sql(db, "UPDATE subject_register SET seq = seq * 10")
    assert run(monkeypatch, capsys, *CHECK)[0] == 1
    code, out = run(monkeypatch, capsys, "audit", "verify")
    assert code == 0, out
