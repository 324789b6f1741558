"""``guard policy lint|test|diff|ropa`` as a user runs them: exit codes, formats, bad input.

Every command line goes through the real ``guard`` entry point in one fresh
process (see ``policykit.guard_batch``); an exception escaping it would show as
exit code -1 with its traceback.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from policykit import SHIPPED, Run, copy_policy, edit_rules, guard, guard_batch, line_of

SPECIAL_GRANT = "p, svc:support, rights.request, special.health, read"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folders the commands run on."""
    base = tmp_path_factory.mktemp("cli")
    clean = copy_policy(base / "clean")
    copy_policy(base / "project" / "policies")
    shutil.copy(SHIPPED / "tests.csv", clean / "tests.csv")
    broken = copy_policy(base / "broken")
    edit_rules(broken, add=[SPECIAL_GRANT])
    moved = copy_policy(base / "moved")
    edit_rules(moved, replace={"g, usage.product, usage": "g, technical.product, technical"})
    (copy_policy(base / "norules") / "rules.csv").unlink()
    bracket = copy_policy(base / "bracket")
    edit_rules(bracket, add=["p, svc:web), customer.registration, identity, read"])
    (base / "wrong.csv").write_text(
        "caller, purpose, categories, action, expected, reason\n"
        "svc:crm, relationship.management, contact, read, allow, allowed\n"
        "svc:crm, relationship.management, technical, read, allow, allowed\n")
    (base / "malformed.csv").write_text('svc:crm, "relationship.management, contact\n')
    if shutil.which("git") is not None:
        root = base / "repo"
        copy_policy(root / "policies")
        who = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
        subprocess.run(["git", "add", "."], cwd=root, check=True)
        subprocess.run(["git", *who, "commit", "-qm", "one"], cwd=root, check=True)
        edit_rules(root / "policies",
                   drop=["p, proc:debtco, order.processing.debt_recovery, transaction, read"])
        subprocess.run(["git", *who, "commit", "-qam", "two"], cwd=root, check=True)
    return base


@pytest.fixture(scope="module")
def runs(tmp: Path) -> dict[str, Run]:
    """Every command line of this module, run once."""
    clean, broken, repo = tmp / "clean", tmp / "broken", tmp / "repo"
    return guard_batch({
        "lint-clean": (["policy", "lint", "--policy-dir", clean], tmp),
        "lint-default-dir": (["policy", "lint"], tmp / "project"),
        "lint-github": (["policy", "lint", "--policy-dir", broken, "--format", "github"], tmp),
        "lint-json": (["policy", "lint", "--policy-dir", broken, "--format", "json"], tmp),
        "lint-missing-dir": (["policy", "lint", "--policy-dir", tmp / "nope"], tmp),
        "lint-bad-format": (["policy", "lint", "--format", "xml"], tmp),
        "lint-bad-option": (["policy", "lint", "--bogus"], tmp),
        "test-pass": (["policy", "test", "--policy-dir", clean], tmp),
        "test-fail": (["policy", "test", "--policy-dir", clean, "--cases", tmp / "wrong.csv"],
                      tmp),
        "test-no-cases": (["policy", "test", "--policy-dir", broken.parent / "moved"], tmp),
        "test-malformed": (["policy", "test", "--policy-dir", clean, "--cases",
                            tmp / "malformed.csv"], tmp),
        "test-broken-policy": (["policy", "test", "--policy-dir", broken, "--cases",
                                tmp / "wrong.csv"], tmp),
        "ropa-bracket": (["policy", "ropa", "--policy-dir", tmp / "bracket"], tmp),
        "ropa-md": (["policy", "ropa", "--policy-dir", clean], tmp),
        "ropa-csv": (["policy", "ropa", "--policy-dir", clean, "--format", "csv"], tmp),
        "diff-moved": (["policy", "diff", clean, tmp / "moved", "--format", "markdown",
                        "--exit-code"], tmp),
        "diff-same": (["policy", "diff", clean, clean, "--exit-code"], tmp),
        "diff-no-repo": (["policy", "diff", "main", "HEAD"], tmp),
        "diff-revisions": (["policy", "diff", "main~1", "main", "--format", "json"],
                           repo if repo.is_dir() else tmp),
        "diff-bad-revision": (["policy", "diff", "nope", "main"], repo if repo.is_dir() else tmp),
        "diff-missing-arg": (["policy", "diff", "main"], tmp),
        "diff-missing-file": (["policy", "diff", clean, tmp / "norules"], tmp),
        "ropa-bad-format": (["policy", "ropa", "--policy-dir", clean, "--format", "pdf"], tmp),
    })


def _one_line_error(run: Run, contains: str) -> None:
    assert run.code == 2, run
    assert "Traceback" not in run.err
    assert run.err.strip().count("\n") == 0, run.err
    assert run.err.startswith("guard: error: ")
    assert contains in run.err


def test_lint_clean_copy_text(runs: dict[str, Run], tmp: Path) -> None:
    folder = tmp / "clean"
    line = line_of(folder, "g5, grp:exalens-us, US")
    for name, rules in (("lint-clean", folder / "rules.csv"), ("lint-default-dir",
                                                                Path("policies/rules.csv"))):
        run = runs[name]
        assert run.code == 0, run
        assert f"{rules}:{line}:21: warning: grp:exalens-us is in US" in run.out, run.out
        assert "[transfer-not-safeguarded] (hint: record a mechanism" in run.out
        assert run.out.rstrip().endswith("0 error(s), 1 warning(s)")


def test_lint_errors_exit_1_in_github_and_json(runs: dict[str, Run], tmp: Path) -> None:
    folder = tmp / "broken"
    line = line_of(folder, SPECIAL_GRANT)
    run = runs["lint-github"]
    assert run.code == 1
    expected = (f"::error file={folder / 'rules.csv'},line={line},col=33,"
                "title=grant-on-special::'special.health' is a special category")
    assert any(out.startswith(expected) for out in run.out.splitlines()), run.out
    run = runs["lint-json"]
    assert run.code == 1
    data = json.loads(run.out)
    assert (data["errors"], data["warnings"]) == (1, 1)
    error = next(f for f in data["findings"] if f["severity"] == "error")
    assert (error["code"], error["line"], error["column"]) == ("grant-on-special", line, 33)
    assert error["hint"]


def test_lint_bad_input(runs: dict[str, Run]) -> None:
    _one_line_error(runs["lint-missing-dir"], "policy folder not found")
    _one_line_error(runs["lint-bad-format"], "--format must be one of text, json, github")
    _one_line_error(runs["lint-bad-option"], "No such option: --bogus")


def test_test_command(runs: dict[str, Run], tmp: Path) -> None:
    cases = sum(1 for ln in (tmp / "clean" / "tests.csv").read_text().splitlines()
                if ln.strip() and not ln.startswith(("#", "caller")))
    run = runs["test-pass"]
    assert (run.code, run.out.strip()) == (0, f"{cases} passed, 0 failed"), run
    run = runs["test-fail"]
    assert run.code == 1
    assert run.out.splitlines() == [
        f"{tmp / 'wrong.csv'}:3: FAIL svc:crm relationship.management technical read: "
        "expected allow (allowed), got deny (category_not_in_purpose)",
        "1 passed, 1 failed",
    ]


def test_test_command_bad_input(runs: dict[str, Run], tmp: Path) -> None:
    _one_line_error(runs["test-no-cases"], "test cases not found")
    _one_line_error(runs["test-malformed"], f"{tmp / 'malformed.csv'}:1:")
    _one_line_error(runs["test-broken-policy"], "[grant-on-special]")
    _one_line_error(runs["ropa-bracket"], "unbalanced closing bracket")


def test_ropa_formats(runs: dict[str, Run]) -> None:
    assert runs["ropa-csv"].code == 0
    assert runs["ropa-csv"].out.startswith("purpose,description,lawful_bases,categories,")
    assert runs["ropa-md"].code == 0
    assert runs["ropa-md"].out.startswith("# Record of processing activities (GDPR Art. 30)")


def test_diff_folders(runs: dict[str, Run]) -> None:
    run = runs["diff-moved"]
    assert run.code == 1, run
    assert "#### `svc:analytics`" in run.out
    assert "| **allowed** | read | `analytics.improvement` | `technical.product` |" in run.out
    same = runs["diff-same"]
    assert (same.code, same.out.splitlines()[-1]) == (0, "no change in access or facts")


def test_diff_revisions(runs: dict[str, Run], tmp: Path) -> None:
    if not (tmp / "repo").is_dir():
        pytest.skip("git is not installed")
    run = runs["diff-revisions"]
    assert run.code == 0, run
    data = json.loads(run.out)
    assert [(c["category"], c["change"]) for c in data["access"]["proc:debtco"]] == [
        ("transaction", "denied")]
    _one_line_error(runs["diff-bad-revision"], "unknown revision or folder: nope")


def test_diff_bad_input(runs: dict[str, Run]) -> None:
    _one_line_error(runs["diff-no-repo"], "not inside a git repository")
    _one_line_error(runs["diff-missing-arg"],  # NEW defaults to the working policy folder
                    "'main' is neither a policy folder nor a git revision")
    _one_line_error(runs["diff-missing-file"], "rules.csv not found in")
    _one_line_error(runs["ropa-bad-format"], "--format must be one of markdown, csv")


def test_installed_command_in_a_subprocess(tmp: Path) -> None:
    """The console script itself: the same one-line error, exit 2."""
    _one_line_error(guard("policy", "ropa", "--policy-dir", tmp / "nope", cwd=tmp),
                    "policy folder not found")
