"""The documented commands work as written (docs/policy-workflow.md, policy.md, audit.md)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from policykit import REPO, copy_policy, edit_rules, guard

from guard.audit import public_key_path
from guard.config import AuditSettings

DOCS = REPO / "docs"
GRANT = "p, svc:crm, promotion.prize_draw, contact, write"
WHO = ["-c", "user.name=t", "-c", "user.email=t@example.org"]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_workflow_step_4_shows_the_uncommitted_change(tmp_path: Path) -> None:
    """Step 4 runs before anything is committed: diff ``main`` with the working folder."""
    copy_policy(tmp_path / "policies")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    subprocess.run(["git", *WHO, "commit", "-qm", "policy"], cwd=tmp_path, check=True)
    subprocess.run(["git", "checkout", "-qb", "change"], cwd=tmp_path, check=True)
    edit_rules(tmp_path / "policies", add=[GRANT])  # step 1, not committed

    text = (DOCS / "policy-workflow.md").read_text()
    step4 = text[text.index("4. **Read the access delta.**"):text.index("5. **Open")]
    command = re.search(r"\$ (guard policy diff [^\n]+)", step4)
    assert command is not None
    done = guard(*command.group(1).split()[1:], cwd=tmp_path)
    assert done.code == 0, done.err
    assert "+ write promotion.prize_draw / contact (+4 sub-categories)" in done.out
    assert "1 access(es) gained, 0 lost" in done.out
    assert done.err == "guard: policy policies\n"
    assert "no change" in guard("policy", "diff", "main", "HEAD", cwd=tmp_path).out


def test_audit_recipe_names_the_public_key_where_the_guard_writes_it() -> None:
    text = (DOCS / "audit.md").read_text()
    recipes = text[text.index("## Auditor recipes"):]
    paths = re.findall(r"--public-key (\S+)", recipes)
    assert paths
    assert {Path(p) for p in paths} == {public_key_path(AuditSettings().signing_key)}


def test_lint_exits_1_on_a_malformed_rules_line_as_documented(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path / "p")
    edit_rules(folder, add=["p, svc:web), customer.registration, identity, read"])
    done = guard("policy", "lint", "--policy-dir", folder)
    assert done.code == 1
    assert "[malformed-line]" in done.out
    text = " ".join((DOCS / "policy-workflow.md").read_text().split())
    assert "Lint reports a malformed line of `rules.csv` or `routes.csv` as an error finding " \
        "(exit 1" in text


def test_policy_md_check_examples_give_the_documented_answers() -> None:
    """Verdict, reason and lawful basis of each ``$ guard check`` in policy.md §4."""
    text = (DOCS / "policy.md").read_text()
    section = text[text.index("## 4. Asking the guard"):text.index("### Many requests")]
    examples = re.findall(r"^\$ (guard check [^\n]+)\n([^\n]+)\n", section, re.MULTILINE)
    assert len(examples) == 2
    for command, answer in examples:
        done = guard(*command.split()[1:], cwd=REPO)
        assert done.code == (0 if answer.startswith("ALLOWED") else 1), done.err

        def essentials(line: str) -> str:
            return re.sub(r"rule rules\.csv:\d+|policy sha256:[0-9a-f]+", "", line)

        assert essentials(done.out.strip()) == essentials(answer)
