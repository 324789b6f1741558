"""Verify names tampering with SQLite's subject index, and only tampering.

``check_subject_index`` took any error reading the subject index for a dropped or
replaced index: a store another connection held locked (a backup tool, a migration, an
``sqlite3`` shell left in a transaction) was reported ``unindexed``, TAMPERED, exit 1,
which sends an auditor after an attacker who is not there; and an index replaced by an
FTS5 table of another definition was taken as the schema's. Now a table that is missing
or not the schema's (``sqlite_master``'s text against the migration's) is ``unindexed``,
and a read a lock stopped is "could not read": no finding, exit 3, run verify again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from guard.audit import VerifyReport, _jverify, _verify, load_public_key, open_store
from guard.audit._schema import SUBJECT_INDEX_DDL, SUBJECT_TOKEN
from guard.audit._verify import Problem, Unread, check_subject_index
from tests.security import clikit
from tests.security.audit_tamper_kit import (
    CHAIN_KEY,
    AuditKeys,
    check,
    cli_verify,
    make_keys,
    record,
    sql,
)

SUBJECTS = [f"subject-{i}" for i in range(8)]


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another connection holding the database file locked (exclusive locking mode)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("CREATE TABLE held (x)")  # a write: the lock is the file's now
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def test_a_locked_store_is_no_finding_of_tampering(tmp_path: Path, audit_keys: AuditKeys) -> None:
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    record(url, audit_keys, SUBJECTS, checkpoint_every=5)
    store = open_store(url, create=False)
    store.close()  # its url is what the check reads; no connection of this test stays open
    with locked(path):
        found = check_subject_index(store, timeout=0.1)
        # Before: Problem("unindexed", "(subject index)", ..., "database is locked").
        assert isinstance(found, Unread), found
        assert "locked" in str(found)
        done = cli_verify(url, audit_keys, tmp_path)
    assert check_subject_index(store) is None  # the lock gone: intact
    # Before: exit 2, "cannot open audit store ...: database is locked", as for a usage error.
    assert done.returncode == 3, done.stdout + done.stderr
    assert "UNFINISHED" in done.stdout
    assert "TAMPERED" not in done.stdout
    assert "Traceback" not in done.stderr
    again = cli_verify(url, audit_keys, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


def _replace_index(url: str, ddl: str) -> None:
    """The attacker's: the subject index made anew by ``ddl``, holding every event's token."""
    sql(url, "DROP TABLE audit_subject")
    sql(url, ddl)
    sql(url, "INSERT INTO audit_subject (rowid, token) SELECT rowid, "
             f"{SUBJECT_TOKEN.format('subject')} FROM audit_event WHERE subject IS NOT NULL")


@pytest.mark.parametrize("ddl", [
    "CREATE VIRTUAL TABLE audit_subject USING fts5(token, content='', detail=none, "
    "tokenize='ascii')",
    "CREATE VIRTUAL TABLE audit_subject USING fts5(token, detail=none, columnsize=0, "
    "tokenize='ascii')",
])
def test_an_index_of_another_definition_is_named(tmp_path: Path, audit_keys: AuditKeys,
                                                 ddl: str) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    record(url, audit_keys, SUBJECTS, checkpoint_every=5)
    _replace_index(url, ddl)
    report = check(url, audit_keys)
    # Before: ok (the tokens the replacement holds are every event's).
    assert [(p.kind, p.writer_id) for p in report.problems] == [("unindexed", "(subject index)")]
    assert "not the schema's" in report.problems[0].message
    done = cli_verify(url, audit_keys, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TAMPERED" in done.stdout


def test_the_schemas_own_index_made_again_is_intact(tmp_path: Path,
                                                    audit_keys: AuditKeys) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    record(url, audit_keys, SUBJECTS, checkpoint_every=5)
    _replace_index(url, SUBJECT_INDEX_DDL)  # what migration 7 does
    assert check(url, audit_keys).ok


def test_an_inner_table_of_the_index_dropped_is_named(tmp_path: Path,
                                                      audit_keys: AuditKeys) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    record(url, audit_keys, SUBJECTS, checkpoint_every=5)
    sql(url, "DROP TABLE audit_subject_data")
    found = check_subject_index(open_store(url, create=False))
    assert isinstance(found, Problem), found
    assert found.kind == "unindexed"


def test_a_read_stopped_after_the_chains_keeps_their_tampering_named(
        tmp_path: Path, audit_keys: AuditKeys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain found tampered with stays TAMPERED when a read after it (the register's, the
    index's) is stopped, here by a lock another connection takes once the chains are read:
    what could not be read is named beside the problem, never in its place."""
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    record(url, audit_keys, SUBJECTS, checkpoint_every=5)
    sql(url, "UPDATE audit_event SET purpose = 'marketing' WHERE rowid = 3")
    store = open_store(url, create=False)
    held = ExitStack()
    chains = _verify.verify_chains

    def then_locked(*args: Any, **kwargs: Any) -> VerifyReport:
        report = chains(*args, **kwargs)
        store.close()  # its own connections gone: the other one may lock the file
        held.enter_context(locked(path))
        return report

    monkeypatch.setattr(_verify, "verify_chains", then_locked)
    monkeypatch.setattr(_verify, "check_subject_index",
                        partial(check_subject_index, timeout=0.1))
    with held:
        # Before: AuditStoreError ("database is locked"), the altered chain unsaid.
        report = _verify.verify(store, load_public_key(audit_keys.public), chain_key=CHAIN_KEY)
    assert [p.kind for p in report.problems] == ["altered"]
    assert [str(u).rpartition(": ")[2] for u in report.unread] == ["database is locked"] * 2


def test_the_journals_check_stopped_keeps_the_stores_tampering_named(
        tmp_path: Path, audit_keys: AuditKeys, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``guard audit verify`` with a journal: the store's findings stay TAMPERED when its
    compare with the journal cannot read the store (here a folder put in the file's place
    while it runs: SQLite cannot open it), the stopped read named beside them."""
    path = tmp_path / "audit.db"
    url = f"sqlite:///{path}"
    record(url, audit_keys, SUBJECTS, checkpoint_every=5)
    sql(url, "UPDATE audit_event SET purpose = 'marketing' WHERE rowid = 3")
    compare = _jverify.verify_journal

    def unopenable(*args: Any, **kwargs: Any) -> Any:
        path.rename(tmp_path / "aside.db")
        path.mkdir()
        try:
            return compare(*args, **kwargs)
        finally:
            path.rmdir()
            (tmp_path / "aside.db").rename(path)

    monkeypatch.setattr(_jverify, "verify_journal", unopenable)
    config = tmp_path / "empty-guard.toml"
    config.write_text("")
    monkeypatch.setenv("GUARD_CONFIG", str(config))
    code, out, err = clikit.run(
        monkeypatch, capsys, "audit", "verify", "--store", url, "--public-key",
        str(audit_keys.public), "--hmac-key", str(audit_keys.hmac), "--journal",
        str(audit_keys.signing.parent / "journal"))
    # Before: exit 3, "UNFINISHED: the store could not be read", the altered event unsaid.
    assert code == 1, out + err
    assert "altered: event" in out
    assert "could not read: audit store" in out
    assert "TAMPERED: 1 problem(s)" in out
