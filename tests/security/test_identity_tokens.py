"""Oversized credentials are refused unparsed; the verified-token cache is bounded and honest.

A 4 MB ``Authorization`` (or caller) header is a 401 ``unauthenticated`` with a
short detail code, never stored or echoed. Verified tokens are cached by their
text, least recently used dropped first; an entry never outlives the token's
``exp`` nor a change of the key files, and a token that fails verification is
never cached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenkit import Keys, UvicornThread, audit_rows, b64, claims, guard_settings

from examples.customers import create_app
from guard._guard import Guard
from middleware.identity import Authenticator, IdentityError

BIG = 4 * 1024 * 1024
CUSTOMER = "/customers/c-0001"


@pytest.fixture(scope="module")
def served(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    base = tmp_path_factory.mktemp("tokens")
    settings = guard_settings(base, keys, proxy_secret_file=keys.proxy_file)
    guard = Guard.from_settings(settings)
    try:
        with UvicornThread(create_app(settings, guard=guard)) as server:
            yield server.url, base / "audit.db"
    finally:
        guard.close()


def _refused_unstored(response: httpx.Response, db: Path, code: str) -> None:
    assert response.status_code == 401, response.text[:200]
    assert len(response.content) < 1000
    body = response.json()
    assert body["reason"] == "unauthenticated"
    row = audit_rows(db, "event_id = ?", (body["decision_id"],))[0]
    assert row["rule"] == (f"check:unauthenticated:{code}",)
    assert max(len(str(value)) for value in row.values()) < 1000
    assert db.stat().st_size < BIG


@pytest.mark.parametrize("prefix", ["Bearer ", "Bearer eyJ", "Basic "])
def test_a_4mb_authorization_header_is_refused_unparsed(
    served: tuple[str, Path], prefix: str
) -> None:
    url, db = served
    value = prefix + "A" * BIG
    response = httpx.get(url + CUSTOMER, headers={"authorization": value,
                                                  "x-purpose": "relationship.management"})
    _refused_unstored(response, db, "token_too_large")


def test_a_4mb_caller_header_is_refused_unparsed(served: tuple[str, Path], keys: Keys) -> None:
    url, db = served
    response = httpx.get(url + CUSTOMER, headers={
        "x-caller": "svc:" + "b" * BIG, "x-guard-proxy-secret": keys.proxy_secret,
        "x-purpose": "relationship.management"})
    _refused_unstored(response, db, "caller_header_too_large")


def test_a_token_just_under_the_bound_is_still_judged(keys: Keys) -> None:
    auth = Authenticator.from_settings(keys.identity(max_token_bytes=4096))
    padded = keys.mint("rsa", pad="x" * 2000)
    assert auth.verify(padded).id == "svc:crm"
    with pytest.raises(IdentityError, match="token_too_large"):
        auth.verify(keys.mint("rsa", pad="x" * 4096))


def _auth(keys: Keys) -> Authenticator:
    return Authenticator.from_settings(keys.identity(leeway_seconds=0, token_cache_size=8))


def test_cache_is_bounded_and_keeps_the_recently_used(keys: Keys) -> None:
    auth = _auth(keys)
    first = keys.mint("ec", sub="svc:first")
    auth.verify(first)
    for n in range(40):
        auth.verify(keys.mint("ec", sub=f"svc:n{n}"))
        auth.verify(first)  # used again and again: never the one dropped
        assert auth.cached <= 8
    assert auth.cached == 8
    assert first in auth._cache


def test_cached_entry_never_outlives_exp(keys: Keys) -> None:
    auth = _auth(keys)
    token = keys.mint("ed", exp=int(time.time()) + 1)
    assert auth.verify(token).id == "svc:crm"
    assert token in auth._cache
    deadline = time.time() + 2.5
    while time.time() < jwt.decode(token, options={"verify_signature": False})["exp"]:
        assert time.time() < deadline
        time.sleep(0.05)
    with pytest.raises(IdentityError, match="expired"):
        auth.verify(token)
    assert token not in auth._cache


def test_an_expired_token_is_never_cached(keys: Keys) -> None:
    auth = _auth(keys)
    with pytest.raises(IdentityError):
        auth.verify(keys.mint("rsa", exp=int(time.time()) - 5))
    assert auth.cached == 0


def _forgeries(keys: Keys) -> list[str]:
    good = keys.mint("rsa", sub="svc:billing")
    head, body, sig = good.split(".")
    swapped = b64(json.dumps(claims(sub="svc:support")).encode())
    return [
        f"{head}.{swapped}.{sig}",                                  # payload swapped
        f"{head}.{body}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}",  # signature
        jwt.encode(claims(), keys.other_rsa, "RS256", headers={"kid": "rsa-1"}),
        good + "x",
    ]


def test_a_forged_token_is_never_cached(keys: Keys) -> None:
    auth = _auth(keys)
    good = keys.mint("rsa", sub="svc:billing")
    assert auth.verify(good).id == "svc:billing"
    for forged in _forgeries(keys):
        for _ in range(3):  # asked again, still verified, still refused
            with pytest.raises(IdentityError):
                auth.verify(forged)
        assert forged not in auth._cache
    assert auth.cached == 1


_PROPERTY_AUTH: list[Authenticator] = []


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=400), cut=st.integers(min_value=0, max_value=400))
def test_anything_that_fails_verification_leaves_the_cache_alone(
    keys: Keys, text: str, cut: int
) -> None:
    if not _PROPERTY_AUTH:
        _PROPERTY_AUTH.append(_auth(keys))
    auth = _PROPERTY_AUTH[0]
    good = keys.mint("hs")
    candidates = [text, good[:cut] + text + good[cut:], good[:cut]]
    for candidate in candidates:
        if candidate == good:
            continue
        before = dict(auth._cache)
        try:
            auth.verify(candidate)
        except IdentityError:
            assert dict(auth._cache) == before
            assert candidate not in auth._cache
        else:  # only a text that is itself a valid token may be cached
            assert jwt.decode(candidate, keys.hs_secret, algorithms=["HS256"],
                              audience="purpose-guard")


def test_a_removed_key_stops_working_from_cache_after_the_refresh(
    keys: Keys, tmp_path: Path
) -> None:
    jwks = json.loads(keys.jwks_file.read_text())
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    auth = Authenticator.from_settings(keys.identity(
        jwks_file=jwks_file, key_refresh_seconds=0.2, development=None))
    ec_token, rsa_token = keys.mint("ec"), keys.mint("rsa")
    assert auth.verify(ec_token).id == auth.verify(rsa_token).id == "svc:crm"
    assert ec_token in auth._cache
    revoked = {"keys": [k for k in jwks["keys"] if k["kid"] != "ec-1"]}
    replacement = tmp_path / "jwks.json.new"
    replacement.write_text(json.dumps(revoked))
    replacement.replace(jwks_file)  # as a deployment rotates it: atomically
    time.sleep(0.3)
    with pytest.raises(IdentityError, match="unknown key id"):
        auth.verify(ec_token)
    assert auth.verify(rsa_token).id == "svc:crm"


def test_a_broken_key_file_keeps_the_last_good_keys(
    keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(keys.jwks_file.read_text())
    auth = Authenticator.from_settings(keys.identity(
        jwks_file=jwks_file, key_refresh_seconds=0.2, development=None))
    jwks_file.write_text("{half a file")
    time.sleep(0.3)
    with caplog.at_level("ERROR", logger="guard.identity"):
        assert auth.verify(keys.mint("rsa")).id == "svc:crm"
    assert "cannot be read" in caplog.text
