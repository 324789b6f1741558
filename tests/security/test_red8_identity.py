"""Eighth review, checked and found sound: a JWKS names no shared secret, and a public
key is never an HMAC secret. Kept by these tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tokenkit import b64, claims, forge

from guard._errors import ConfigError
from middleware.identity import Authenticator, IdentityError


def _jwks(tmp_path: Path, entry: dict[str, Any]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [entry]}))
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("alg", ["HS256", None])
def test_a_shared_secret_in_the_jwks_file_is_refused_at_load(
        tmp_path: Path, keys: Any, alg: str | None) -> None:
    """A JWKS file is often a public document (fetched from the provider): an ``oct`` key
    in it would let anyone who reads it sign tokens."""
    entry: dict[str, Any] = {"kty": "oct", "kid": "shared", "k": b64(b"k" * 48)}
    if alg:
        entry["alg"] = alg
    settings = keys.identity(jwks_file=_jwks(tmp_path, entry), hs256_secret_file=None,
                             development=False)
    with pytest.raises(ConfigError):
        Authenticator.from_settings(settings, announce=False)


@pytest.mark.parametrize("kid", ["rsa-1", None])
def test_the_rsa_public_key_as_an_hmac_secret_verifies_nothing(keys: Any,
                                                               kid: str | None) -> None:
    """Algorithm confusion: an HS256 token keyed with the RS256 key's public PEM."""
    auth = Authenticator.from_settings(keys.identity(hs256_secret_file=None, development=False),
                                       announce=False)
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    for secret in (keys.rsa_public_pem(), keys.rsa_public_pem().strip()):
        with pytest.raises(IdentityError):
            auth.verify(forge(header, claims(), secret))
    assert auth.verify(keys.mint("rsa")).id == "svc:crm"  # the key itself still verifies
