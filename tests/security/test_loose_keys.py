"""Key files that go away, break or change in place: the keys in force follow the files.

A key file the guard trusts (the JWKS file, the HS256 secret) that is deleted
takes its keys with it at the next look (fail closed), for the token cache and
the remembered ``Authorization`` values alike; a file that becomes unreadable or
invalid keeps the keys last read from it and says why (the log and
``Authenticator.key_files_error``, shown in the sidecar's ``/readyz``). Real
files on disk, real tokens; the look-up interval runs on a clock the test turns.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
from sidecarkit import policy_copy, serve_sidecar, sidecar_settings
from tokenkit import AUDIENCE, ISSUER, Keys

from middleware._keys import KeyFiles
from middleware.identity import Authenticator, Caller, IdentityError

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def _files(keys: Keys, tmp_path: Path) -> tuple[Path, Path]:
    jwks, secret = tmp_path / "jwks.json", tmp_path / "hs256.secret"
    jwks.write_text(keys.jwks_file.read_text())
    secret.write_bytes(keys.hs_file.read_bytes())
    return jwks, secret


def _auth(jwks: Path | None, secret: Path | None, clock: list[float]) -> Authenticator:
    files = KeyFiles(jwks, secret, refresh_seconds=60, clock=lambda: clock[0])
    return Authenticator(files, audience=AUDIENCE, issuer=ISSUER)


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _proved(auth: Authenticator, token: str) -> tuple[bytes, Caller]:
    raw = f"Bearer {token}".encode()
    caller = auth.authenticate({"authorization": raw.decode()}, None)
    auth.remember(raw, caller)
    assert auth.known(raw, {b"authorization": raw})[0] is caller
    return raw, caller


def test_a_deleted_jwks_file_stops_its_keys_cached_and_remembered_alike(
    keys: Keys, tmp_path: Path
) -> None:
    clock = [0.0]
    jwks, secret = _files(keys, tmp_path)
    auth = _auth(jwks, secret, clock)
    rsa_token, hs_token = keys.mint("rsa"), keys.mint("hs")
    raw, _ = _proved(auth, rsa_token)
    assert auth.verify(hs_token).id == "svc:crm"
    jwks.unlink()
    clock[0] = 61.0
    assert auth.known(raw, {b"authorization": raw}) is None  # due: authenticate() looks
    with pytest.raises(IdentityError, match="unknown key id"):
        auth.authenticate(_bearer(rsa_token), None)
    with pytest.raises(IdentityError):
        auth.verify(keys.mint("ed"))
    assert auth.remembered == 0
    assert auth.verify(hs_token).id == "svc:crm"  # the other file's key stays
    error = auth.key_files_error
    assert error is not None
    assert str(jwks) in error
    assert "gone" in error


def test_a_deleted_hs256_secret_stops_it(keys: Keys, tmp_path: Path) -> None:
    clock = [0.0]
    jwks, secret = _files(keys, tmp_path)
    auth = _auth(jwks, secret, clock)
    hs_token = keys.mint("hs")
    assert auth.verify(hs_token).id == "svc:crm"
    secret.unlink()
    clock[0] = 61.0
    with pytest.raises(IdentityError):
        auth.verify(hs_token)
    assert auth.verify(keys.mint("ec")).id == "svc:crm"


def test_a_deleted_file_put_back_verifies_again(keys: Keys, tmp_path: Path) -> None:
    clock = [0.0]
    jwks, _ = _files(keys, tmp_path)
    auth = _auth(jwks, None, clock)
    token = keys.mint("ed")
    assert auth.verify(token).id == "svc:crm"
    content = jwks.read_bytes()
    jwks.unlink()
    clock[0] = 61.0
    with pytest.raises(IdentityError):
        auth.verify(token)
    jwks.write_bytes(content)
    clock[0] = 122.0
    assert auth.verify(token).id == "svc:crm"
    assert auth.key_files_error is None


@pytest.mark.parametrize("breakage", ["half a file", "a duplicate kid", "a directory"])
def test_a_broken_key_file_keeps_its_last_good_keys_and_says_why(
    keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture, breakage: str
) -> None:
    clock = [0.0]
    jwks, _ = _files(keys, tmp_path)
    auth = _auth(jwks, None, clock)
    token = keys.mint("rsa")
    content = jwks.read_text()
    if breakage == "half a file":
        jwks.write_text(content[: len(content) // 2])
    elif breakage == "a duplicate kid":
        data = json.loads(content)
        data["keys"].append(dict(data["keys"][0]))
        jwks.write_text(json.dumps(data))
    else:
        jwks.unlink()
        jwks.mkdir()  # not a file any more: unreadable, not gone
    clock[0] = 61.0
    with caplog.at_level("ERROR", logger="guard.identity"):
        assert auth.verify(token).id == "svc:crm"
    error = auth.key_files_error
    assert error is not None
    assert str(jwks) in error
    assert "keeping" in error
    assert str(jwks) in caplog.text
    if jwks.is_dir():
        jwks.rmdir()
    jwks.write_text(content)
    clock[0] = 122.0
    assert auth.verify(token).id == "svc:crm"
    assert auth.key_files_error is None


def test_a_key_replaced_in_place_with_the_same_stamp_is_seen(keys: Keys, tmp_path: Path) -> None:
    """A same-size rewrite within one timestamp tick (restored here with utime) is a change."""
    clock = [0.0]
    jwks, _ = _files(keys, tmp_path)
    auth = _auth(jwks, None, clock)
    token = keys.mint("ec")
    assert auth.verify(token).id == "svc:crm"
    before = os.stat(jwks)
    data = json.loads(jwks.read_text())
    ec_key = next(k for k in data["keys"] if k["kid"] == "ec-1")
    ec_key["kid"] = "ec-2"  # the same length: the same size
    with open(jwks, "r+") as handle:  # in place: the same inode
        handle.write(json.dumps(data))
    os.utime(jwks, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(jwks).st_size == before.st_size
    clock[0] = 61.0
    with pytest.raises(IdentityError, match="unknown key id"):
        auth.verify(token)


def test_the_sidecar_refuses_a_deleted_files_tokens_and_shows_why(
    keys: Keys, tmp_path: Path
) -> None:
    """A real uvicorn sidecar: the JWKS file deleted, its tokens refused, /readyz says so."""
    jwks, _ = _files(keys, tmp_path)
    identity = keys.identity(jwks_file=jwks, hs256_secret_file=None, development=False,
                             key_refresh_seconds=0.05)
    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings = sidecar_settings(tmp_path, policy, identity)
    token = keys.mint("rsa")
    check = {"x-original-uri": "/echo/x", "x-original-method": "GET",
             "x-purpose": "relationship.management", **_bearer(token)}
    with serve_sidecar(settings) as server:
        first = httpx.get(server.url + "/v1/check", headers=check, timeout=10)
        assert first.status_code == 200, first.text
        assert httpx.get(server.url + "/readyz", timeout=10).json()["key_files_error"] is None
        jwks.unlink()
        for _ in range(200):  # the next look comes within key_refresh_seconds
            refused = httpx.get(server.url + "/v1/check", headers=check, timeout=10)
            if refused.status_code != 200:
                break
            time.sleep(0.01)
        assert refused.status_code == 401, refused.text
        ready = httpx.get(server.url + "/readyz", timeout=10).json()
        assert jwks.name in ready["key_files_error"]  # a caller it does not know: no folder
