"""``guard check`` and ``guard explain``: exit codes, one-line errors, batch streaming."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from guard.policy import load_policy
from tests.security.clikit import run

GUARD = Path(sys.executable).parent / "guard"
CRM = ["--caller", "svc:crm", "--purpose", "relationship.management"]


@pytest.fixture(scope="module")
def version(policy_dir: Path) -> str:
    return load_policy(policy_dir).version


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch, policy_dir: Path) -> None:
    monkeypatch.chdir(policy_dir.parent)  # ./policies is the shipped policy


# ------------------------------------------------------------------ single check

def test_allowed_exits_0_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    code, out, err = run(monkeypatch, capsys, "check", *CRM, "--category", "contact.email",
                         "--category", "identity", "--action", "write")
    assert code == 0
    assert err == "guard: policy policies\n"  # which policy, on stderr
    assert out.count("\n") == 1
    assert out.startswith("ALLOWED svc:crm write contact.email, identity")
    assert "reason allowed" in out
    assert "rules.csv:" in out
    assert "lawful basis contract, legal_obligation, legitimate_interest" in out
    assert version in out


@pytest.mark.parametrize(
    ("args", "reason"),
    [(["--caller", "grp:exalens-us", "--purpose", "business.administration",
       "--category", "technical"], "transfer_not_safeguarded"),
     ([*CRM, "--category", "special.health"], "special_category"),
     ([*CRM, "--category", "technical"], "category_not_in_purpose"),
     (["--caller", "svc:billing", "--purpose", "order.processing", "--category", "identity",
       "--action", "write"], "category_not_granted"),
     (["--caller", "svc:marketing", "--purpose", "marketing.third_party", "--category",
       "contact.email", "--subject", "cust-1"], "consent_required")],
)
def test_denied_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str],
    reason: str,
) -> None:
    code, out, _ = run(monkeypatch, capsys, "check", *args)
    assert code == 1
    assert out.startswith("DENIED ")
    assert f"reason {reason};" in out
    assert f"rule check:{reason};" in out


def test_json_output(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    code, out, _ = run(monkeypatch, capsys, "check", *CRM, "--category", "contact", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["allowed"] is True
    assert data["reason"] == "allowed"
    assert data["categories"] == ["contact"]
    assert data["policy_version"] == version
    assert data["party_type"] == "internal"
    assert all(rule.startswith("rules.csv:") for rule in data["rule"])


@pytest.mark.parametrize(
    "args",
    [["check", *CRM],                                             # no --category
     ["check", "--purpose", "x", "--category", "y"],              # no --caller
     ["check", *CRM, "--category", "contact", "--action", "delete"],
     ["check", *CRM, "--category", "contact", "--bogus"],
     ["check", *CRM, "--category"],
     ["check", "--batch", "-", "--caller", "svc:crm"],
     ["check", "--batch", "/no/such/file.jsonl"],
     ["explain", "--caller", "svc:crm"],
     ["check", *CRM, "--category", "contact", "--policy-dir", "/no/such/folder"]],
)
def test_usage_and_policy_errors_exit_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert out == ""
    assert err.startswith("guard: error: ")
    assert err.count("\n") == 1, err


def test_broken_policy_exits_2_naming_file_and_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], policy_dir: Path,
    tmp_path: Path,
) -> None:
    shutil.copy(policy_dir / "model.conf", tmp_path / "model.conf")
    rules = (policy_dir / "rules.csv").read_text() + "p, svc:crm, relationship.management\n"
    (tmp_path / "rules.csv").write_text(rules)
    line = rules.count("\n")
    for args in (["check", *CRM, "--category", "contact"], ["check", "--batch", "-"]):
        code, out, err = run(monkeypatch, capsys, *args, "--policy-dir", str(tmp_path),
                             stdin=b"")
        assert (code, out) == (2, "")
        assert err.startswith(f"guard: error: {tmp_path / 'rules.csv'}:{line}:")
        assert err.count("\n") == 1


def test_defaults_to_local_policies_then_the_shipped_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], policy_dir: Path,
    tmp_path: Path, version: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./policies here: the packaged copy answers
    code, out, _ = run(monkeypatch, capsys, "check", *CRM, "--category", "contact", "--json")
    assert code == 0
    assert json.loads(out)["policy_version"] == version

    local = tmp_path / "policies"
    local.mkdir()
    shutil.copy(policy_dir / "model.conf", local / "model.conf")
    (local / "rules.csv").write_text(
        (policy_dir / "rules.csv").read_text().replace(
            "p, svc:crm, relationship.management, contact, read\n", ""))
    code, out, _ = run(monkeypatch, capsys, "check", *CRM, "--category", "contact", "--json")
    assert code == 1
    assert json.loads(out)["reason"] == "category_not_granted"
    assert json.loads(out)["policy_version"] != version


def test_console_script_from_another_folder(tmp_path: Path) -> None:
    """The installed ``guard`` command, run where there is no ./policies."""
    done = subprocess.run(
        [str(GUARD), "check", "--caller", "grp:exalens-in", "--purpose",
         "business.administration", "--category", "identity.name"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ALLOWED grp:exalens-in read identity.name")
    done = subprocess.run([str(GUARD), "check", "--caller", "x", "--oops"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1


_HEAVY = ("psycopg", "rich", "cryptography", "guard.audit._fields")
_LOADED = ("import atexit, sys\n"
           f"atexit.register(lambda: print('loaded:', *[m for m in {_HEAVY!r}\n"
           "                                            if m in sys.modules]))\n"
           "sys.argv[0] = 'guard'\n"
           "from guard.cli import main\n"
           "main()\n")


@pytest.mark.parametrize(("args", "code"), [
    (["check", "--caller", "svc:crm", "--purpose", "relationship.management", "--category",
      "contact"], 0),
    (["check", "--caller", "x", "--oops"], 2),
], ids=["check", "a-mistake"])
def test_a_check_or_a_mistake_loads_no_postgresql_driver_nor_audit_commands_modules(
        tmp_path: Path, args: list[str], code: int) -> None:
    """With SQLite configured (the default), psycopg is not imported (0.1 s of a command's
    0.45 s of CPU); rich, the audit store's checkpoint keys and journal frames are imported
    by the audit commands that use them."""
    done = subprocess.run([sys.executable, "-c", _LOADED, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == code, done.stderr
    assert done.stdout.splitlines()[-1] == "loaded:"


@pytest.mark.parametrize("args", [
    ["audit", "query", "--limit", "0"],
    ["audit", "stats", "--since", "soon"],
    ["audit", "report", "--subject", "c-1", "--format", "pdf"],
    ["audit", "verify", "--store", "sqlite:///missing.db"],
], ids=["query", "stats", "report", "verify"])
def test_an_audit_command_imports_what_it_uses_when_it_runs(
        tmp_path: Path, args: list[str]) -> None:
    """The audit commands load their modules as they run: a mistake in each, from a fresh
    process, is still one line and exit 2."""
    done = subprocess.run([sys.executable, "-c", _LOADED, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("guard: error: ")


# ------------------------------------------------------------------ explain

def test_explain_lists_every_check_then_the_decision(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(monkeypatch, capsys, "explain", "--caller", "grp:exalens-us",
                       "--purpose", "business.administration", "--category", "technical")
    assert code == 1
    questions = ["the caller is in the policy", "the purpose is one a request may declare",
                 "every category is in the category tree", "no category is special",
                 "the caller holds a grant on this purpose", "within the purpose's ceiling",
                 "grant covers every category and the action", "data may go to the caller's"]
    positions = [out.index(q) for q in questions]
    assert positions == sorted(positions)
    assert "consent" not in out.split("DENIED")[0]  # it stopped at the failing check
    assert out.count("pass") == 7
    assert out.count("FAIL") == 1
    assert out.strip().splitlines()[-1].startswith("DENIED grp:exalens-us")


def test_explain_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(monkeypatch, capsys, "explain", *CRM, "--category", "identity",
                       "--json")
    assert code == 0
    data = json.loads(out)
    assert data["decision"]["allowed"] is True
    assert [s["check"] for s in data["steps"]][:2] == ["unknown_caller", "unknown_purpose"]
    assert len(data["steps"]) == 13  # checks 1-9 and the four register checks
    assert all(s["passed"] and s["question"] for s in data["steps"])


# ------------------------------------------------------------------ batch

def line(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


BATCH = b"".join([
    line(caller="svc:crm", purpose="relationship.management", categories=["contact"],
         action="write"),                                                          # 1 allowed
    line(caller="grp:exalens-us", purpose="business.administration",
         categories=["technical"]),                                                 # 2 denied
    b"\n",                                                                          # 3 blank
    b"{not json\n",                                                                 # 4
    b"[1, 2]\n",                                                                    # 5
    line(purpose="relationship.management", categories=["contact"]),               # 6
    line(caller="svc:crm", purpose="relationship.management", categories="contact"),  # 7
    line(caller="svc:crm", purpose="relationship.management", categories=[]),       # 8
    line(caller="svc:crm", purpose="relationship.management", categories=["contact"],
         action="delete"),                                                          # 9
    line(caller="svc:crm", purpose="relationship.management", categories=["contact"],
         acton="write"),                                                            # 10
    b'{"caller": "svc:crm", "purpose": "\xff"}\n',                                   # 11
    line(caller="svc:crm", purpose="relationship.management", categories=["contact"],
         subject="cust-9"),                                                         # 12 allowed
    line(caller="svc:crm", purpose="", categories=["contact"]),                     # 13
])
EXPECTED = {
    1: ("allowed", None), 2: ("transfer_not_safeguarded", None),
    4: ("malformed_request", "not JSON"), 5: ("malformed_request", "not a JSON object"),
    6: ("malformed_request", "'caller'"), 7: ("malformed_request", "'categories'"),
    8: ("malformed_request", "'categories'"), 9: ("malformed_request", "'action'"),
    10: ("malformed_request", "'acton'"), 11: ("malformed_request", "UTF-8"),
    12: ("allowed", None), 13: ("malformed_request", "'purpose'"),
}


def check_batch_output(out: str, version: str) -> None:
    records = [json.loads(text) for text in out.splitlines()]
    assert [r["line"] for r in records] == sorted(EXPECTED)
    for record in records:
        reason, problem = EXPECTED[record["line"]]
        assert record["reason"] == reason, record
        assert record["allowed"] is (reason == "allowed")
        assert record["policy_version"] == version
        if problem is not None:
            assert problem in record["error"], record
            assert record["rule"][0].startswith("check:malformed_request")


def test_batch_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    version: str,
) -> None:
    (tmp_path / "requests.jsonl").write_bytes(BATCH)
    code, out, err = run(monkeypatch, capsys, "check", "--batch",
                         str(tmp_path / "requests.jsonl"))
    assert code == 0
    assert err == "guard: policy policies\n"
    check_batch_output(out, version)


def test_batch_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    code, out, _ = run(monkeypatch, capsys, "check", "--batch", "-", stdin=BATCH)
    assert code == 0
    check_batch_output(out, version)


def test_large_batch_keeps_order_and_no_progress_off_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    allowed = line(caller="svc:crm", purpose="relationship.management", categories=["contact"])
    denied = line(caller="svc:crm", purpose="relationship.management", categories=["technical"])
    (tmp_path / "big.jsonl").write_bytes((allowed + denied) * 6_000)
    code, out, err = run(monkeypatch, capsys, "check", "--batch", str(tmp_path / "big.jsonl"))
    assert code == 0
    assert err == "guard: policy policies\n"  # progress only on a terminal
    records = out.splitlines()
    assert len(records) == 12_000
    for number in (1, 2, 11_999, 12_000):
        record = json.loads(records[number - 1])
        assert record["line"] == number
        assert record["allowed"] is (number % 2 == 1)


def test_batch_streams_answers_line_by_line() -> None:
    """The first answer comes back before the input ends (nothing is read ahead)."""
    proc = subprocess.Popen([str(GUARD), "check", "--batch", "-"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    assert proc.stdout is not None
    timer = threading.Timer(30, proc.kill)
    timer.start()
    try:
        proc.stdin.write(line(caller="svc:crm", purpose="relationship.management",
                              categories=["contact"]))
        proc.stdin.flush()
        first = json.loads(proc.stdout.readline())
        assert first["line"] == 1
        assert first["allowed"] is True
        proc.stdin.write(b"oops\n")
        proc.stdin.close()
        second = json.loads(proc.stdout.readline())
        assert (second["line"], second["reason"]) == (2, "malformed_request")
        assert proc.wait(timeout=30) == 0
    finally:
        timer.cancel()
        proc.kill()
        proc.wait()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_progress_on_a_terminal_for_large_input(tmp_path: Path) -> None:
    """stderr on a terminal and a large input: a progress counter, stdout untouched."""
    request = line(caller="svc:crm", purpose="relationship.management", categories=["contact"])
    (tmp_path / "big.jsonl").write_bytes(request * 25_000)  # > 1 MiB
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([str(GUARD), "check", "--batch", str(tmp_path / "big.jsonl")],
                              stdout=subprocess.PIPE, stderr=follower, timeout=120, check=False)
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 25_000
    assert b"judged 10,000 requests" in shown
    assert b"judged 25,000 requests" in shown
