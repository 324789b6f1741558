"""``guard token issue`` from the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

from guard.cli._token import parse_ttl
from guard.config import IdentitySettings
from middleware.identity import Authenticator

GUARD = str(Path(sys.executable).with_name("guard"))


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GUARD, "token", "issue", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)


def test_issue_prints_a_token_the_middleware_accepts(tmp_path: Path) -> None:
    done = run(tmp_path, "--caller", "svc:crm", "--purpose", "relationship.management",
               "--purpose", "promotion.prize_draw", "--ttl", "1h")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.count(".") == 2
    assert "\n" not in token
    key = tmp_path / ".guard" / "dev-token.key"
    assert key.stat().st_mode & 0o777 == 0o600
    auth = Authenticator.from_settings(IdentitySettings(dev_key=key))
    caller = auth.verify(token)
    assert caller.id == "svc:crm"
    assert caller.purposes == {"relationship.management", "promotion.prize_draw"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["nbf"] == 3600


def test_bad_ttl_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = run(tmp_path, "--caller", "svc:crm", "--ttl", "forever")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--ttl 'forever'" in lines[0]
    assert not (tmp_path / ".guard").exists()


@pytest.mark.parametrize(("text", "seconds"),
                         [("30s", 30), ("15m", 900), ("1h", 3600), ("7d", 604800), ("90", 90)])
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "1y", "-5m", "1.5h", "31d", "h"])
def test_parse_ttl_rejects(text: str) -> None:
    from guard._errors import ConfigError

    with pytest.raises(ConfigError):
        parse_ttl(text)


def test_issue_refuses_outside_development_mode(tmp_path: Path) -> None:
    secret = tmp_path / "hs256"
    secret.write_bytes(b"k" * 40)
    done = subprocess.run(
        [GUARD, "token", "issue", "--caller", "svc:crm"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60, check=False,
        env={**os.environ, "GUARD_IDENTITY__HS256_SECRET_FILE": str(secret)})
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "development mode" in lines[0]
    assert not (tmp_path / ".guard").exists()
