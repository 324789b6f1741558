"""The command line judges with the policy the enforcement points load, and says which.

With ``[policy] dir`` naming a broken policy, ``guard check`` used to answer from
the shipped copy and lint passed, while the sidecar refused to start: a reviewer
was shown a policy that was not the one in force.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from guard._errors import PolicyError
from guard.config import load_settings
from guard.policy import resolve_policy_dir
from guard.policy._source import SHIPPED_DIR
from tests.security.clikit import clean_guard_env, run  # noqa: F401 (autouse)

REPO = Path(__file__).resolve().parents[2]
CRM = ["--caller", "svc:crm", "--purpose", "relationship.management", "--category",
       "contact.email"]
CRM_GRANT = "p, svc:crm, relationship.management, contact, read"


def policy_copy(folder: Path, *, drop: str | None = None, add: str | None = None) -> Path:
    """A copy of the repository's policy (with tests.csv and routes.csv), edited."""
    shutil.copytree(REPO / "policies", folder)
    rules = folder / "rules.csv"
    lines = rules.read_text().splitlines()
    if drop is not None:
        assert drop in lines
        lines.remove(drop)
    rules.write_text("\n".join([*lines, *([add] if add else [])]) + "\n")
    return folder


def configure(tmp_path: Path, folder: Path) -> None:
    (tmp_path / "guard.toml").write_text(f'[policy]\ndir = "{folder}"\n')


def test_check_lint_and_test_use_a_broken_configured_policy_as_the_sidecar_does(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = policy_copy(tmp_path / "srv" / "policy", add="p, svc:crm, nowhere, contact")
    configure(tmp_path, broken)
    where = f"{broken / 'rules.csv'}:"

    code, out, err = run(monkeypatch, capsys, "check", *CRM)
    assert (code, out) == (2, "")
    assert err.startswith(f"guard: error: {where}"), err
    code, out, err = run(monkeypatch, capsys, "policy", "lint")
    assert code == 1
    assert f"{where}" in out
    assert "1 error(s)" in out
    assert err == f"guard: policy {broken}\n"
    code, out, err = run(monkeypatch, capsys, "policy", "test")
    assert code == 2
    assert err.startswith(f"guard: error: {where}"), err

    from middleware.sidecar import create_app

    with pytest.raises(PolicyError, match="wrong-arity"):
        create_app(load_settings())  # the enforcement point refuses the same policy


def test_check_answers_from_the_configured_policy_and_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    narrowed = policy_copy(tmp_path / "narrowed", drop=CRM_GRANT)
    configure(tmp_path, narrowed)
    code, out, err = run(monkeypatch, capsys, "check", *CRM)
    assert code == 1  # the shipped copy allows this request
    assert "reason category_not_granted" in out
    assert err == f"guard: policy {narrowed}\n"
    code, out, err = run(monkeypatch, capsys, "check", *CRM, "--policy-dir", str(REPO / "policies"))
    assert code == 0  # --policy-dir still wins
    assert err == f"guard: policy {REPO / 'policies'}\n"


def test_the_shipped_copy_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert resolve_policy_dir(load_settings().policy.dir) == SHIPPED_DIR
    for args in (["policy", "lint"], ["policy", "test"], ["check", *CRM]):
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 0, err
        assert f"guard: policy {SHIPPED_DIR} (the copy shipped with purpose-guard" in err


def test_a_configured_routes_file_is_linted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    routes = tmp_path / "routes.csv"
    routes.write_text("GET, /a, contact\nFETCH, /b, contact\n")
    (tmp_path / "guard.toml").write_text(f'[sidecar]\nroutes = "{routes}"\n')
    code, out, _ = run(monkeypatch, capsys, "policy", "lint")
    assert code == 1
    assert f"{routes}:2:1: error: unknown HTTP method 'FETCH'" in out
    routes.unlink()
    code, out, _ = run(monkeypatch, capsys, "policy", "lint")
    assert code == 1
    assert f"{routes}: error: routes file not found" in out


def test_a_pushed_policy_source_is_pointed_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "guard.toml").write_text('[policy]\nsource = "postgresql://db/guard"\n')
    code, _, err = run(monkeypatch, capsys, "check", *CRM)
    assert code == 0
    assert "the enforcement points load the newest pushed policy, not this folder" in err
