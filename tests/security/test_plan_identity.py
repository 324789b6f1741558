"""The remembered ``Authorization`` values: never a caller ``authenticate()`` would not give.

``GuardMiddleware`` answers a request whose raw ``Authorization`` value it saw
proven before from ``Authenticator.known`` (no decoding, no parsing).
These tests hold that memory to what ``authenticate()`` answers: only a value
it proved is kept, and only as the caller it proved; an expired or not yet
valid token, a key removed from the key files, or a caller header a proxy may
assert sends the request back to ``authenticate()``; the memory is bounded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tokenkit import AUDIENCE, ISSUER, Keys

from middleware import identity
from middleware._keys import KeyFiles
from middleware.identity import PROXY_SECRET_HEADER, Authenticator, Caller, IdentityError


def _auth(keys: Keys, tmp_path: Path, clock: list[float], **options: object) -> Authenticator:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(keys.jwks_file.read_text())
    files = KeyFiles(jwks, None, refresh_seconds=60, clock=lambda: clock[0])
    return Authenticator(files, audience=AUDIENCE, issuer=ISSUER, **options)  # type: ignore[arg-type]


def _proved(auth: Authenticator, token: str) -> tuple[bytes, Caller]:
    raw = f"Bearer {token}".encode()
    caller = auth.authenticate({"authorization": raw.decode()}, None)
    auth.remember(raw, caller)
    return raw, caller


def test_only_a_value_authenticate_proved_is_kept(keys: Keys, tmp_path: Path) -> None:
    auth = _auth(keys, tmp_path, [0.0])
    token = keys.mint("ec")
    raw = f"Bearer {token}".encode()
    auth.remember(raw, Caller("svc:crm", None, "jwt"))  # never verified: not kept
    assert auth.known(raw, {b"authorization": raw}) is None
    caller = auth.authenticate({"authorization": raw.decode()}, None)
    auth.remember(raw, Caller(caller.id, caller.purposes, "jwt"))  # not the caller it proved
    auth.remember(raw, Caller(caller.id, None, "proxy"))
    assert auth.known(raw, {b"authorization": raw}) is None
    basic = b"Basic " + token.encode()
    auth.remember(basic, caller)  # not the bearer value it proved
    assert auth.known(basic, {b"authorization": basic}) is None
    auth.remember(raw, caller)
    assert auth.known(raw, {b"authorization": raw})[0] is caller
    assert auth.known(raw + b" ", {b"authorization": raw + b" "}) is None  # another value
    assert auth.known(None, {}) is None


def test_a_key_removed_stops_a_remembered_token(keys: Keys, tmp_path: Path) -> None:
    clock = [0.0]
    auth = _auth(keys, tmp_path, clock)
    raw, caller = _proved(auth, keys.mint("ec"))
    assert auth.known(raw, {b"authorization": raw})[0] is caller
    jwks = tmp_path / "jwks.json"
    data = json.loads(jwks.read_text())
    data["keys"] = [k for k in data["keys"] if k["kid"] != "ec-1"]
    jwks.write_text(json.dumps(data))
    clock[0] = 61.0  # the files are due to be looked at: authenticate() looks
    assert auth.known(raw, {b"authorization": raw}) is None
    with pytest.raises(IdentityError):
        auth.authenticate({"authorization": raw.decode()}, None)
    assert auth.known(raw, {b"authorization": raw}) is None
    assert auth.remembered == 0


def test_an_expired_or_early_token_is_not_answered(keys: Keys, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    auth = _auth(keys, tmp_path, [0.0])
    now = time.time()
    raw, caller = _proved(auth, keys.mint("ec", exp=int(now) + 100))
    assert auth.known(raw, {b"authorization": raw})[0] is caller
    monkeypatch.setattr(identity.time, "time", lambda: now + 100 + auth.leeway + 1)
    assert auth.known(raw, {b"authorization": raw}) is None
    with pytest.raises(IdentityError, match="expired"):
        auth.authenticate({"authorization": raw.decode()}, None)
    assert auth.remembered == 0
    monkeypatch.setattr(identity.time, "time", lambda: now)
    early, _ = _proved(auth, keys.mint("ec", nbf=int(now) + auth.leeway - 5,
                                       exp=int(now) + 1000))
    monkeypatch.setattr(identity.time, "time", lambda: now - 10)  # the clock went back
    assert auth.known(early, {b"authorization": early}) is None
    with pytest.raises(IdentityError, match="nbf"):
        auth.authenticate({"authorization": early.decode()}, None)


def test_a_caller_header_a_proxy_may_assert_is_left_to_authenticate(
    keys: Keys, tmp_path: Path,
) -> None:
    secret = keys.proxy_secret.encode()
    auth = _auth(keys, tmp_path, [0.0], proxy_secrets=[secret])
    raw, _caller = _proved(auth, keys.mint("ec"))
    spoof = {b"authorization": raw, b"x-caller": b"svc:admin"}
    assert auth.known(raw, spoof) is None  # authenticate() decides: the proxy path
    with pytest.raises(IdentityError, match="proxy_not_authenticated"):
        auth.authenticate({k.decode(): v.decode() for k, v in spoof.items()}, None)
    proxied = {**spoof, PROXY_SECRET_HEADER.encode(): secret}
    assert auth.known(raw, proxied) is None
    assert auth.authenticate({k.decode(): v.decode() for k, v in proxied.items()},
                             None).id == "svc:admin"
    (tmp_path / "plain").mkdir()
    plain = _auth(keys, tmp_path / "plain", [0.0])  # no proxy may assert a caller: ignored
    raw2, caller2 = _proved(plain, keys.mint("ec"))
    assert plain.known(raw2, {b"authorization": raw2, b"x-caller": b"svc:admin"})[0] is caller2


def test_the_memory_is_bounded(keys: Keys, tmp_path: Path) -> None:
    auth = _auth(keys, tmp_path, [0.0], cache_size=3)
    kept = [_proved(auth, keys.mint("ec", sub=f"svc:n{n}")) for n in range(5)]
    assert auth.remembered == 3
    assert [auth.known(raw, {b"authorization": raw}) is not None for raw, _ in kept] == [
        False, False, True, True, True]
