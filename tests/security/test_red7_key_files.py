"""Seventh review: a key file another local user may rewrite proves no caller.

The JWKS file, the HS256 secret and the proxy secret decide who a caller is: whoever can
rewrite one (a file others may write, or one in a folder another user owns) adds a key
of their own, or replaces the secret, and mints a token for any caller, or asserts any
caller through the proxy header. They were read whatever their owner and mode, while the
audit keys are refused in that case (sixth review, ``guard/_secrets.py`` ``own_only``);
now they go through the same check: refused at start, and a file that becomes writable
by others while the guard runs is no longer read (the keys last read from it stay).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from tokenkit import AUDIENCE, ISSUER, claims

from guard._errors import ConfigError
from guard.config import IdentitySettings
from middleware.identity import Authenticator, IdentityError

NOBODY = 65534
"""Another local user (``nobody``)."""
SECRET = b"s" * 48
ATTACKER = b"a" * 48
PROXY = "p" * 40


def _identity(base: Path, kind: str, **more: Any) -> IdentitySettings:
    paths = {"jwks": "jwks_file", "hs256": "hs256_secret_file", "proxy": "proxy_secret_file"}
    return IdentitySettings(**{paths[kind]: base / kind}, audience=AUDIENCE, issuer=ISSUER,
                            development=False, **more)


def _write(base: Path, kind: str, keys: Any) -> Path:
    path = base / kind
    if kind == "jwks":
        path.write_bytes(keys.jwks_file.read_bytes())
    elif kind == "hs256":
        path.write_bytes(SECRET)
    else:
        path.write_text(PROXY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder the other user can reach (pytest's own are root's alone), removed after."""
    made = Path(tempfile.mkdtemp(prefix="red7-keys-", dir="/tmp"))
    made.chmod(0o755)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def _folder(tmp_path: Path) -> Path:
    base = tmp_path / "keys"
    base.mkdir(mode=0o755)
    base.chmod(0o755)
    return base


def _as_nobody(code: str) -> None:
    """Run ``code`` in a Python process as the user ``nobody`` (the other local user)."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    subprocess.run([python, "-I", "-c", code], user=NOBODY, group=NOBODY, check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(autouse=True)
def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("acting as another local user needs root")


@pytest.mark.parametrize("kind", ["jwks", "hs256", "proxy"])
@pytest.mark.parametrize("how", ["others may write it", "its group may write it",
                                 "another user owns its folder"])
def test_a_key_file_another_user_may_rewrite_is_refused_at_start(
    tmp_path: Path, keys: Any, kind: str, how: str
) -> None:
    base = _folder(tmp_path)
    path = _write(base, kind, keys)
    if how == "others may write it":
        path.chmod(0o606)
        expected = "writable by others"
    elif how == "its group may write it":
        path.chmod(0o660)
        expected = "writable by others"
    else:
        os.chown(base, NOBODY, NOBODY)
        expected = "folder is owned by uid 65534"
    with pytest.raises(ConfigError, match=expected) as refused:
        Authenticator.from_settings(_identity(base, kind), announce=False)
    assert str(path) in str(refused.value)


def test_an_hs256_secret_others_may_write_mints_no_caller(shared: Path, keys: Any) -> None:
    """The whole attack: another user rewrites the secret and signs a token as svc:crm."""
    base = _folder(shared)
    path = _write(base, "hs256", keys)
    auth = Authenticator.from_settings(_identity(base, "hs256", key_refresh_seconds=0.001),
                                       announce=False)
    ours = jwt.encode(claims(sub="svc:crm"), SECRET.decode(), "HS256")
    assert auth.verify(ours).id == "svc:crm"
    path.chmod(0o666)  # a mistaken deploy step, or a restore that lost the mode
    _as_nobody(f"open({str(path)!r}, 'wb').write({ATTACKER!r})")
    assert path.read_bytes() == ATTACKER  # the other user could rewrite it
    forged = jwt.encode(claims(sub="svc:crm", jti="forged"), ATTACKER.decode(), "HS256")
    time.sleep(0.01)  # past the look-up interval: the next use reads the file again
    with pytest.raises(IdentityError):
        auth.verify(forged)
    assert auth.verify(ours).id == "svc:crm"  # the keys last read from it stay in force
    assert "writable by others" in (auth.key_files_error or "")


def test_a_jwks_file_in_another_users_folder_mints_no_caller(shared: Path, keys: Any) -> None:
    """Another user who owns the folder swaps the JWKS file for one with their own key."""
    base = _folder(shared)
    path = _write(base, "jwks", keys)
    auth = Authenticator.from_settings(_identity(base, "jwks", key_refresh_seconds=0.001),
                                       announce=False)
    assert auth.verify(keys.mint("rsa", sub="svc:crm")).id == "svc:crm"
    os.chown(base, NOBODY, NOBODY)  # e.g. a fetch job's folder
    theirs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(theirs.public_key()))
    jwks = json.loads(path.read_text())
    jwks["keys"].append({**jwk, "kid": "theirs", "alg": "RS256", "use": "sig"})
    _as_nobody(f"import os; open({str(base / 'new')!r}, 'w').write({json.dumps(jwks)!r}); "
               f"os.rename({str(base / 'new')!r}, {str(path)!r})")
    forged = jwt.encode(claims(sub="svc:crm"), theirs, "RS256", headers={"kid": "theirs"})
    time.sleep(0.01)  # past the look-up interval: the next use reads the file again
    with pytest.raises(IdentityError):
        auth.verify(forged)
    assert "folder is owned by uid 65534" in (auth.key_files_error or "")
    assert auth.verify(keys.mint("rsa", sub="svc:crm")).id == "svc:crm"


@pytest.mark.parametrize("kind", ["jwks", "hs256", "proxy"])
def test_a_key_file_only_root_or_this_user_may_write_is_read(
    tmp_path: Path, keys: Any, kind: str
) -> None:
    """Another user's file, readable by the guard, in a folder of root's (a secrets
    agent's file, mode 0640); and root's file in a folder anyone may write but only
    its owners may rename in (a Kubernetes secret volume: mode 1777, root's files)."""
    base = _folder(tmp_path)
    path = _write(base, kind, keys)
    os.chown(path, NOBODY, 0)
    path.chmod(0o640)
    Authenticator.from_settings(_identity(base, kind), announce=False)
    os.chown(path, 0, 0)
    path.chmod(0o644)
    base.chmod(0o1777)
    Authenticator.from_settings(_identity(base, kind), announce=False)


def test_the_consoles_oidc_client_secret_others_may_write_is_refused(tmp_path: Path) -> None:
    from guard.config import AuditSettings, ConsoleSettings, Settings
    from middleware.console import create_console

    base = _folder(tmp_path)
    secret = base / "oidc-secret"
    secret.write_text("client-secret\n")
    secret.chmod(0o666)
    settings = Settings(
        audit=AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                            hmac_key=tmp_path / "hmac.key", signing_key=tmp_path / "sign.key"),
        identity=IdentitySettings(dev_key=tmp_path / "dev.key"),
        console=ConsoleSettings(auditors=["svc:support"], oidc_issuer="http://127.0.0.1:9",
                                oidc_client_secret_file=secret))
    with pytest.raises(ConfigError, match="writable by others"):
        create_console(settings)
    secret.chmod(0o600)
    create_console(settings)


@pytest.mark.parametrize("kind", ["jwks", "hs256", "proxy"])
def test_a_link_to_a_key_in_another_users_folder_is_refused(
    shared: Path, keys: Any, kind: str
) -> None:
    """The folder that matters is the one holding the file read, not only the link's."""
    base = _folder(shared)
    theirs = shared / "theirs"
    theirs.mkdir()
    target = _write(theirs, kind, keys)
    os.chown(theirs, NOBODY, NOBODY)  # whoever owns it can swap the file at any time
    (base / kind).symlink_to(target)
    with pytest.raises(ConfigError, match="folder is owned by uid 65534"):
        Authenticator.from_settings(_identity(base, kind), announce=False)
    os.chown(theirs, 0, 0)  # the same link into a folder of root's is read
    Authenticator.from_settings(_identity(base, kind), announce=False)


def test_a_link_to_an_hs256_secret_another_user_may_swap_mints_no_caller(
    shared: Path, keys: Any
) -> None:
    base = _folder(shared)
    theirs = shared / "theirs"
    theirs.mkdir()
    target = _write(theirs, "hs256", keys)
    (base / "hs256").symlink_to(target)
    auth = Authenticator.from_settings(_identity(base, "hs256", key_refresh_seconds=0.001),
                                       announce=False)
    os.chown(theirs, NOBODY, NOBODY)
    _as_nobody(f"import os; open({str(theirs / 'new')!r}, 'wb').write({ATTACKER!r}); "
               f"os.rename({str(theirs / 'new')!r}, {str(target)!r})")
    forged = jwt.encode(claims(sub="svc:crm"), ATTACKER.decode(), "HS256")
    time.sleep(0.01)  # past the look-up interval: the next use reads the file again
    with pytest.raises(IdentityError):
        auth.verify(forged)
    assert "folder is owned by uid 65534" in (auth.key_files_error or "")


def test_a_link_another_user_put_in_a_folder_others_may_write_is_refused(
    shared: Path, keys: Any
) -> None:
    """A folder its group may write (a shared configuration folder): a member swaps root's
    HS256 secret for a link to a file of root's whose text they know (``/etc/passwd``),
    and signs tokens with that text as the secret."""
    base = _folder(shared)
    os.chown(base, 0, NOBODY)
    path = _write(base, "hs256", keys)
    auth = Authenticator.from_settings(_identity(base, "hs256", key_refresh_seconds=0.001),
                                       announce=False)
    base.chmod(0o775)  # root's, its group (nobody's) may write, no sticky bit
    known = Path("/etc/passwd")
    _as_nobody(f"import os; os.symlink({str(known)!r}, {str(base / 'new')!r}); "
               f"os.rename({str(base / 'new')!r}, {str(path)!r})")
    forged = jwt.encode(claims(sub="svc:crm"), known.read_bytes().strip(), "HS256")
    time.sleep(0.01)  # past the look-up interval: the next use reads the file again
    with pytest.raises(IdentityError):
        auth.verify(forged)
    assert "link" in (auth.key_files_error or "")
    with pytest.raises(ConfigError, match="link"):
        Authenticator.from_settings(_identity(base, "hs256"), announce=False)


def test_a_link_of_roots_in_a_folder_others_may_write_is_read(shared: Path, keys: Any) -> None:
    """A Kubernetes secret volume: a folder anyone may write (sticky), root's links into
    root's folder of the current version."""
    base = _folder(shared)
    version = base / "..2026_11_30"
    version.mkdir(mode=0o755)
    for kind in ("jwks", "hs256", "proxy"):
        _write(version, kind, keys).chmod(0o644)
        (base / kind).symlink_to(Path("..data") / kind)
    (base / "..data").symlink_to(version.name)
    base.chmod(0o1777)
    for kind in ("jwks", "hs256", "proxy"):
        Authenticator.from_settings(_identity(base, kind), announce=False)
