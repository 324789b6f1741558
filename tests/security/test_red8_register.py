"""A subject register entry planted, edited or deleted in the store is named by verify.

The guard enforces the rows of ``subject_register``, which are no part of a hash chain;
every entry is also a chained ``subject_right`` event. A writer to the store (the
threat model's "writer to the audit store") who deletes an objection's row makes the
guard process the subject again, and one who inserts a consent's row makes it process
what the subject never agreed to; ``guard audit verify`` must name either.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from guard.audit import open_store
from guard.audit._verify import check_register
from tests.guard.audit.conftest import sql
from tests.security import clikit

SUBJECT = "cust-0042"
CHECK = ["check", "--caller", "svc:marketing", "--purpose", "marketing.advertising",
         "--category", "contact.email", "--subject", SUBJECT]


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        *args: str) -> tuple[int, str]:
    """``guard ARGS`` in-process with an empty stdin; (exit code, stdout)."""
    code, out, _err = clikit.run(monkeypatch, capsys, *args, stdin=b"")
    return code, out


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy_dir: Path) -> Path:
    """An SQLite audit store and keys the CLI is pointed at, with one objection recorded."""
    monkeypatch.chdir(policy_dir.parent)
    return clikit.cli_store(tmp_path, monkeypatch)


def _object(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(monkeypatch, capsys, "subject", "object", SUBJECT, "--purpose",
                    "marketing", "--ref", "T-7")
    assert code == 0, out
    assert run(monkeypatch, capsys, *CHECK)[0] == 1  # the objection is enforced


def test_an_objection_deleted_from_the_register_is_named_by_verify(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _object(monkeypatch, capsys)
    sql(db, "DELETE FROM subject_register")
    assert run(monkeypatch, capsys, *CHECK)[0] == 0  # the attack: processed again
    code, out = run(monkeypatch, capsys, "audit", "verify")
    assert code == 1, out
    assert "deleted: writer (register)" in out
    assert "is missing from the register" in out


def test_a_consent_planted_in_the_register_is_named_by_verify(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _object(monkeypatch, capsys)
    sql(db, "INSERT INTO subject_register SELECT subject, seq + 1, 'planted', 'consent', "
             "'marketing', effective, recorded_at, recorded_by, ref, event_id "
             "FROM subject_register")
    code, out = run(monkeypatch, capsys, "audit", "verify")
    assert code == 1, out
    assert "inserted: writer (register)" in out
    assert "entry planted (consent) has no subject_right event" in out


@pytest.mark.parametrize("change", [
    "kind = 'consent'", "purpose = 'billing'", "effective = '2999-01-01'",
    "recorded_by = 'cli:someone'", "ref = 'T-8'",
    # another pseudonym whatever the key made (one in 256 begins with "00")
    "subject = CASE substr(subject, 1, 2) WHEN '00' THEN '11' ELSE '00' END || substr(subject, 3)",
])
def test_an_entry_edited_in_the_register_is_named_by_verify(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        change: str) -> None:
    _object(monkeypatch, capsys)
    sql(db, f"UPDATE subject_register SET {change}")
    code, out = run(monkeypatch, capsys, "audit", "verify")
    assert code == 1, out
    assert "altered: writer (register)" in out


def test_an_untouched_register_verifies_intact(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _object(monkeypatch, capsys)
    code, out = run(monkeypatch, capsys, "subject", "erase", SUBJECT, "--ref", "T-9")
    assert code == 0, out
    code, out = run(monkeypatch, capsys, "audit", "verify")
    assert code == 0, out
    assert out.startswith("intact:")


def test_an_entry_recorded_while_verify_reads_is_not_named(
        db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Its event is durable in the journal first and reaches the index a moment later:
    verify's second look, past the index's lag, finds the two agreeing."""
    _object(monkeypatch, capsys)
    conn = sqlite3.connect(db)
    try:
        with conn:
            (row,) = conn.execute("SELECT * FROM audit_event WHERE kind = 'subject_right'")
            conn.execute("DELETE FROM audit_event WHERE kind = 'subject_right'")
    finally:
        conn.close()
    marks = ",".join("?" * len(row))
    indexed = threading.Timer(0.2, sql, (db, f"INSERT INTO audit_event VALUES ({marks})",
                                              row))
    store = open_store(f"sqlite:///{db}", create=False)
    try:
        indexed.start()
        assert check_register(store, settle=1.0) is None
        assert check_register(store, settle=0) is None
        sql(db, "DELETE FROM subject_register")
        assert check_register(store, settle=0.01) is not None
    finally:
        indexed.join()
        store.close()
