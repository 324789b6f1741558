"""``guard audit``: output formats, exit codes, and one-line errors."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from guard.audit import load_hmac_key, load_signing_key
from tests.guard.audit.conftest import Keys, decision_event, make_trail, record
from tests.security.clikit import run

GUARD = [sys.executable, "-c", "from guard.cli import main; main()"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with default settings: audit.db and .guard/ keys here."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GUARD_CONFIG", os.devnull)
    keys = Keys(tmp_path / ".guard" / "audit-signing.key",
                tmp_path / ".guard" / "audit-signing.key.pub")
    load_signing_key(keys.signing, create=True)
    key = load_hmac_key(tmp_path / ".guard" / "subject-hmac.key", create=True)
    from guard.audit import EventKind

    trail = make_trail("sqlite:///audit.db", keys, hmac_key=key,
                       journal=tmp_path / "audit.db.journal")
    record(trail, decision_event(caller="svc:crm", subject_id="x"))
    trail.record_fields(EventKind.DECISION, {
        "caller": "svc:billing", "purpose": "order.processing", "categories": ("financial",),
        "action": "read", "allowed": True, "reason": "allowed", "lawful_basis": ("contract",),
        "subject_id": "alice"})
    trail.record_fields(EventKind.DECISION, {
        "caller": "grp:exalens-us", "purpose": "business.administration",
        "categories": ("identity",), "action": "read", "allowed": False,
        "reason": "transfer_not_safeguarded", "subject_id": "alice"})
    trail.close()
    return tmp_path


def test_query_formats(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "audit", "query", "--json", "--subject", "alice")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(x["caller"], x["allowed"]) for x in lines] == [("grp:exalens-us", False),
                                                            ("svc:billing", True)]
    code, out, _ = run(monkeypatch, capsys, "audit", "query", "--csv", "--denied")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["reason"] for r in rows] == ["transfer_not_safeguarded"]
    code, out, _ = run(monkeypatch, capsys, "audit", "query", "--purpose", "order")
    assert code == 0
    assert "svc:billing" in out
    assert "svc:crm" not in out


def test_report_and_stats(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "audit", "report", "--subject", "alice")
    assert code == 0
    assert "| svc:billing | - | - | order.processing | financial | contract | 1 |" in out
    assert "grp:exalens-us" not in out  # refused, so not a recipient
    assert "1 refused request(s)" in out
    code, out, _ = run(monkeypatch, capsys, "audit", "report", "--subject", "alice",
                       "--format", "json")
    assert [r["recipient"] for r in json.loads(out)["recipients"]] == ["svc:billing"]
    code, out, _ = run(monkeypatch, capsys, "audit", "stats", "--since", "30d", "--json")
    data = json.loads(out)
    assert (data["total"], data["denied"]) == (3, 1)
    assert data["by_caller"][0]["key"] == "grp:exalens-us"


def test_verify_exit_codes(workdir: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "audit", "verify")
    assert (code, out.splitlines()[-1].split(":")[0]) == (0, "intact")
    conn = sqlite3.connect(workdir / "audit.db")
    with conn:
        bad = conn.execute("SELECT event_id FROM audit_event WHERE seq = 2").fetchone()[0]
        conn.execute("UPDATE audit_event SET allowed = 1 WHERE seq = 3")
        conn.execute("UPDATE audit_event SET purpose = 'legal.compliance' WHERE seq = 2")
    conn.close()
    code, out, _ = run(monkeypatch, capsys, "audit", "verify")
    assert code == 1
    assert f"altered: event {bad}" in out


@pytest.mark.parametrize(("args", "message"), [
    (["audit", "query", "--store", "sqlite:///missing.db"], "no audit store at missing.db"),
    (["audit", "query", "--since", "last tuesday"], "bad --since value 'last tuesday'"),
    (["audit", "query", "--until", "7q"], "bad --until value '7q'"),
    (["audit", "query", "--reason", "because"], "unknown --reason 'because'"),
    (["audit", "query", "--json", "--csv"], "choose one of --json and --csv"),
    (["audit", "query", "--limit", "0"], "--limit must be at least 1"),
    (["audit", "query", "--store", "mysql://x"], "is not sqlite:///PATH or postgresql://"),
    (["audit", "verify", "--store", "postgresql://postgres@127.0.0.1:9/x"],
     "cannot read audit store postgresql://postgres@127.0.0.1:9/x"),
    (["audit", "report", "--subject", "a", "--format", "pdf"], "--format must be markdown"),
    (["audit", "report", "--subject", "a", "--hmac-key", "nokey"], "cannot read the subject"),
    (["audit", "stats", "--since", "soon"], "bad --since value 'soon'"),
    (["audit", "verify", "--public-key", "nokey.pub"], "cannot read the audit public key"),
])
def test_mistakes_are_one_line_and_exit_2(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], message: str,
) -> None:
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert message in err


def test_missing_store_from_a_real_process(tmp_path: Path) -> None:
    done = subprocess.run([*GUARD, "audit", "query"], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin",
                                          "GUARD_CONFIG": os.devnull},
                          check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == ("guard: error: no audit store at audit.db "
                                   "(pass --store or record a decision)")
    assert not (tmp_path / "audit.db").exists()
