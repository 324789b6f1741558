"""``guard policy diff`` shows a change to the route declarations (twelfth review).

The sidecar (and the middleware, for routes declared in no code) judges a request by
the routes.csv row it matches: its categories, action, subject parameter and mode, and
which row wins. A pull request turning ``GET /customers/{customer_id}/payment`` public,
or its categories into ``aggregated``, gives that data to every caller, yet the diff CI
posts on the pull request compared model.conf and rules.csv only: it said "0
access(es) gained ... No change in access" and ``--exit-code`` exited 0.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clikit import clean_guard_env, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guard" / "policytools"))
from policykit import copy_policy

__all__ = ["clean_guard_env"]

PAYMENT = "GET,  /customers/{customer_id}/payment,   financial,         read,  customer_id"
CONTACT = "GET,  /customers/{customer_id}/contact,   contact,           read,  customer_id"
_WHO = ["-c", "user.name=t", "-c", "user.email=t@example.org"]


def _edit(folder: Path, old: str, new: str) -> None:
    path = folder / "routes.csv"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _repo(base: Path) -> Path:
    """A repository whose main holds the shipped policy and routes."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    copy_policy(base / "policies", routes=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=base, check=True)
    subprocess.run(["git", "add", "."], cwd=base, check=True)
    subprocess.run(["git", *_WHO, "commit", "-qm", "base"], cwd=base, check=True)
    return base


@pytest.mark.parametrize(("new", "shown"), [
    ("GET,  /customers/{customer_id}/payment,   public", "public"),
    ("GET,  /customers/{customer_id}/payment,   aggregated,        read,  customer_id",
     "aggregated read subject customer_id"),
    ("GET,  /customers/{customer_id}/payment,   financial,         read", "financial read"),
])
def test_a_route_made_public_or_weaker_is_in_the_diff(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        new: str, shown: str) -> None:
    root = _repo(tmp_path / "repo")
    _edit(root / "policies", PAYMENT, new)
    subprocess.run(["git", *_WHO, "commit", "-qam", "routes"], cwd=root, check=True)
    monkeypatch.chdir(root)
    code, out, err = run(monkeypatch, capsys, "policy", "diff", "main~1", "main", "--exit-code")
    assert code == 1, (out, err)  # before: 0, "no change in access or facts"
    assert "GET /customers/{customer_id}/payment" in out
    assert "financial read subject customer_id -> " + shown in out
    code, out, err = run(monkeypatch, capsys, "policy", "diff", "main~1", "main",
                         "--format", "markdown")
    assert code == 0
    assert "No change in access" not in out
    assert "`GET /customers/{customer_id}/payment`" in out
    code, out, err = run(monkeypatch, capsys, "policy", "diff", "main~1", "main",
                         "--format", "json")
    facts = json.loads(out)["facts"]
    assert {"kind": "route", "subject": "GET /customers/{customer_id}/payment",
            "old": "financial read subject customer_id", "new": shown} in facts


def test_routes_reordered_added_or_removed_are_in_the_diff(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    old, new = copy_policy(tmp_path / "old", routes=True), copy_policy(tmp_path / "new",
                                                                       routes=True)
    _edit(new, PAYMENT + "\n" + "GET,  /customers/{customer_id}/profile",
          "GET,  /customers/{customer_id}/profile")  # the payment row removed
    _edit(new, CONTACT, CONTACT + "\nGET, /customers/{customer_id}/card, public")
    code, out, _ = run(monkeypatch, capsys, "policy", "diff", str(old), str(new),
                       "--format", "json", "--exit-code")
    assert code == 1
    facts = {(f["subject"], f["old"], f["new"]) for f in json.loads(out)["facts"]}
    assert ("GET /customers/{customer_id}/payment", "financial read subject customer_id",
            "-") in facts
    assert ("GET /customers/{customer_id}/card", "-", "public") in facts
    # the same rows in another order: which row wins may change, so it is shown too
    swapped = copy_policy(tmp_path / "swapped", routes=True)
    _edit(swapped, PAYMENT, "@@")
    _edit(swapped, CONTACT, PAYMENT + "\n" + CONTACT)
    _edit(swapped, "@@\n", "")
    code, out, _ = run(monkeypatch, capsys, "policy", "diff", str(old), str(swapped),
                       "--exit-code")
    assert code == 1
    assert "route order" in out


def test_a_field_of_a_minimise_row_made_public_is_in_the_diff(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    old, new = copy_policy(tmp_path / "old", routes=True), copy_policy(tmp_path / "new",
                                                                       routes=True)
    _edit(new, "payment_card=financial.payment_card", "payment_card=public")
    _edit(new, " device=technical.device", " device=technical.device ssn=public")
    code, out, _ = run(monkeypatch, capsys, "policy", "diff", str(old), str(new),
                       "--format", "json", "--exit-code")
    assert code == 1
    (fact,) = [f for f in json.loads(out)["facts"] if f["kind"] == "route"]
    assert "payment_card=financial.payment_card" in fact["old"]
    assert "payment_card=public" in fact["new"]
    assert "ssn=public" in fact["new"]
    assert "customer_id=public" in fact["old"]


def test_the_same_routes_spelled_otherwise_are_no_change(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    old, new = copy_policy(tmp_path / "old", routes=True), copy_policy(tmp_path / "new",
                                                                       routes=True)
    _edit(new, PAYMENT, "get,/customers/{customer_id}/payment,financial,READ,customer_id,deny")
    _edit(new, "GET,  /customers/{customer_id},           identity contact,",
          "GET,  /customers/{customer_id},           contact identity,")  # a set of categories
    code, out, err = run(monkeypatch, capsys, "policy", "diff", str(old), str(new),
                         "--exit-code")
    assert code == 0, (out, err)
    assert "no change in access or facts" in out
