"""Policy diff: access gained and lost, through grants, trees and transfers; git revisions."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from policykit import SHIPPED, copy_policy, edit_rules

from guard._errors import PolicyError
from guard.policy._compiled import CompiledPolicy
from guard.policy._diff import (
    AccessChange,
    diff_policies,
    read_revision,
    render_markdown,
    render_text,
    to_json,
)
from guard.policy._load import compile_source, load_policy


def _changes(old: CompiledPolicy, new: CompiledPolicy) -> set[tuple[str, str, str, str, bool]]:
    return {(c.caller, c.purpose, c.category, c.action, c.allowed)
            for c in diff_policies(old, new).access}


def test_identical_policies_have_no_diff() -> None:
    shipped = load_policy(SHIPPED)
    delta = diff_policies(shipped, shipped)
    assert delta.empty
    assert "no change" in render_text(delta, "a", "b")


def test_grants_added_and_removed(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, drop=["p, svc:analytics, analytics.improvement, usage, read"],
               add=["p, adv:accountants, legal.compliance, identity.name, read"])
    delta = diff_policies(load_policy(SHIPPED), load_policy(folder))
    assert _changes(load_policy(SHIPPED), load_policy(folder)) == {
        ("svc:analytics", "analytics.improvement", "usage", "read", False),
        ("adv:accountants", "legal.compliance", "identity.name", "read", True),
    }
    lost = next(c for c in delta.access if not c.allowed)
    assert lost == AccessChange("svc:analytics", "analytics.improvement", "usage", "read",
                                False, "allowed", "category_not_granted", covers=2)
    assert delta.facts == ()


def test_moving_a_category_changes_access_without_touching_grants(tmp_path: Path) -> None:
    """usage.product moves under technical: no grant line changes, access does."""
    folder = copy_policy(tmp_path)
    edit_rules(folder, replace={"g, usage.product, usage": "g, technical.product, technical"})
    old, new = load_policy(SHIPPED), load_policy(folder)
    changes = _changes(old, new)
    # svc:analytics reads technical and usage: it keeps the data under its new key
    assert ("svc:analytics", "analytics.improvement", "usage.product", "read", False) in changes
    assert ("svc:analytics", "analytics.improvement", "technical.product", "read",
            True) in changes
    # svc:crm reads usage for prize draws but has no technical grant: it loses product usage
    assert ("svc:crm", "promotion.prize_draw", "usage.product", "read", False) in changes
    assert not any(c[0] == "svc:crm" and c[2] == "technical.product" for c in changes)
    # svc:auth only holds technical.login: a new sibling gives it nothing
    assert not any(c[0] == "svc:auth" for c in changes)
    # grp:exalens-us holds technical, but every personal-data request of it is refused
    assert not any(c[0] == "grp:exalens-us" for c in changes)
    facts = {(f.kind, f.subject, f.old, f.new) for f in diff_policies(old, new).facts}
    assert ("category", "usage.product", "usage.product < usage", "-") in facts
    assert ("category", "technical.product", "-", "technical.product < technical") in facts


def test_transfer_mechanism_and_ceiling_changes(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, add=["g5, grp:exalens-us, uk_addendum"],
               drop=["g, technical, ceiling:analytics.improvement",
                     "p, svc:analytics, analytics.improvement, technical, read"])
    old, new = load_policy(SHIPPED), load_policy(folder)
    delta = diff_policies(old, new)
    gained = [c for c in delta.access if c.caller == "grp:exalens-us"]
    assert [(c.category, c.covers, c.old_reason, c.new_reason) for c in gained] == [
        ("technical", 5, "transfer_not_safeguarded", "allowed")]
    assert ("svc:analytics", "analytics.improvement", "technical", "read",
            False) in _changes(old, new)
    facts = {(f.kind, f.subject, f.old, f.new) for f in delta.facts}
    assert facts == {("mechanism", "grp:exalens-us", "-", "uk_addendum"),
                     ("ceiling", "analytics.improvement", "technical, usage", "usage")}


def test_party_country_basis_and_adequacy_facts(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, replace={"g5, proc:cloudhost, IE": "g5, proc:cloudhost, CH",
                                "g4, adv:accountants, adviser": "g4, adv:accountants, authority"},
               drop=["g5, UY, adequate", "g3, order.processing, legitimate_interest"])
    delta = diff_policies(load_policy(SHIPPED), load_policy(folder))
    facts = {(f.kind, f.subject, f.old, f.new) for f in delta.facts}
    assert ("country", "proc:cloudhost", "IE", "CH") in facts
    assert ("party type", "adv:accountants", "adviser", "authority") in facts
    assert ("lawful basis", "order.processing", "contract, legitimate_interest",
            "contract") in facts
    adequacy = next(f for f in delta.facts if f.kind == "adequacy")
    assert "UY" in adequacy.old
    assert "UY" not in adequacy.new
    assert delta.access == ()  # CH is adequate too; nobody gains or loses anything


def test_renderings(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    edit_rules(folder, drop=["p, svc:analytics, analytics.improvement, usage, read"])
    delta = diff_policies(load_policy(SHIPPED), load_policy(folder))
    text = render_text(delta, "main", "HEAD")
    assert "svc:analytics:\n  - read  analytics.improvement / usage (+2 sub-categories)" in text
    assert text.endswith("0 access(es) gained, 1 lost, 0 fact(s) changed")
    markdown = render_markdown(delta, "main", "HEAD")
    assert "#### `svc:analytics`" in markdown
    assert "| **denied** | read | `analytics.improvement` | `usage` (+2 sub-categories) |" in (
        markdown)
    data = json.loads(json.dumps(to_json(delta, "main", "HEAD")))
    assert data["access"]["svc:analytics"][0]["change"] == "denied"
    assert data["old"]["version"] == delta.old_version


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose history changes the policy once."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    copy_policy(root / "policies")

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                       cwd=root, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "shipped policy")
    edit_rules(root / "policies", add=["p, svc:crm, promotion.prize_draw, contact, write"])
    git("commit", "-q", "-am", "crm writes prize draw contacts")
    return root


def test_diff_between_git_revisions(repo: Path) -> None:
    old = compile_source(read_revision("main~1", cwd=repo))
    new = compile_source(read_revision("main", cwd=repo))
    assert _changes(old, new) == {
        ("svc:crm", "promotion.prize_draw", "contact", "write", True)}
    assert old.source.rules_origin == "main~1:policies/rules.csv"


def test_unknown_revision_and_missing_path(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="unknown revision or folder: nope"):
        read_revision("nope", cwd=repo)
    with pytest.raises(PolicyError, match=r"main has no elsewhere/model\.conf"):
        read_revision("main", "elsewhere", cwd=repo)
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    with pytest.raises(PolicyError, match="not inside a git repository"):
        read_revision("main", cwd=outside)
