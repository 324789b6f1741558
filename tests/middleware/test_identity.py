"""Identity: JWT service tokens and the trusted-proxy header, attacks included."""

from __future__ import annotations

import stat
import time
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenkit import Keys, b64, claims, forge

from guard.cli._token import issue_token
from guard.config import IdentitySettings
from middleware.identity import (
    Authenticator,
    Caller,
    IdentityError,
    dev_key_id,
    load_or_create_dev_key,
)


@pytest.fixture(scope="module")
def auth(keys: Keys) -> Authenticator:
    return Authenticator.from_settings(keys.identity(trusted_proxies=["10.0.0.0/8", "::1"],
                                                     proxy_secret_file=keys.proxy_file))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed", "hs"])
def test_each_key_type_proves_the_caller(auth: Authenticator, keys: Keys, kind: str) -> None:
    caller = auth.authenticate(bearer(keys.mint(kind, sub="svc:billing")), "127.0.0.1")
    assert caller == Caller("svc:billing", None, "jwt")


def test_dev_token_from_the_cli_helper_is_accepted(auth: Authenticator, keys: Keys) -> None:
    token = issue_token(keys.identity(), "svc:crm", ["relationship.management"], 60)
    caller = auth.authenticate(bearer(token), None)
    assert caller.id == "svc:crm"
    assert caller.purposes == frozenset({"relationship.management"})
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"


def test_purposes_claim_limits_declarable_purposes(auth: Authenticator, keys: Keys) -> None:
    caller = auth.verify(keys.mint("rsa", purposes=["marketing", "legal.compliance"]))
    assert caller.may_declare("marketing.advertising")
    assert caller.may_declare("legal.compliance")
    assert not caller.may_declare("marketingx")
    assert not caller.may_declare("legal")
    assert not caller.may_declare("relationship.management")
    assert Caller("x", None, "jwt").may_declare("anything")


def _attacks(keys: Keys) -> dict[str, str]:
    now = int(time.time())
    good = keys.mint("rsa")
    head, body, sig = good.split(".")
    flipped = ("A" if sig[5] != "A" else "B")
    return {
        "expired": keys.mint("rsa", exp=now - 120, iat=now - 600, nbf=now - 600),
        "not yet valid": keys.mint("rsa", nbf=now + 300),
        "wrong audience": keys.mint("rsa", aud="someone-else"),
        "wrong issuer": keys.mint("rsa", iss="https://evil.example"),
        "tampered payload": ".".join(
            [head, b64(b'{"sub":"svc:support","aud":"purpose-guard",'
                       b'"iss":"purpose-guard-dev","exp":9999999999}'), sig]),
        "tampered signature": ".".join([head, body, sig[:5] + flipped + sig[6:]]),
        "alg none": forge({"alg": "none", "typ": "JWT"}, claims(), None),
        "alg none with kid": forge({"alg": "none", "kid": "rsa-1"}, claims(), None),
        "HS256 with the RSA public key (kid)": forge(
            {"alg": "HS256", "kid": "rsa-1"}, claims(), keys.rsa_public_pem()),
        "HS256 with the RSA public key (no kid)": forge(
            {"alg": "HS256"}, claims(), keys.rsa_public_pem()),
        "unknown kid": jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": "rsa-9"}),
        "unknown key, known kid": jwt.encode(claims(), keys.other_rsa, "RS256",
                                             headers={"kid": "rsa-1"}),
        "RS512 not accepted": jwt.encode(claims(), keys.rsa, "RS512", headers={"kid": "rsa-1"}),
        "no exp": keys.mint("rsa", exp=None),
        "no sub": keys.mint("rsa", sub=None),
        "empty sub": keys.mint("rsa", sub=""),
        "purposes not a list": keys.mint("rsa", purposes={"a": 1}),
        "garbage": "not.a.token",
    }


ATTACK_NAMES = [
    "expired", "not yet valid", "wrong audience", "wrong issuer", "tampered payload",
    "tampered signature", "alg none", "alg none with kid",
    "HS256 with the RSA public key (kid)", "HS256 with the RSA public key (no kid)",
    "unknown kid", "unknown key, known kid", "RS512 not accepted", "no exp", "no sub",
    "empty sub", "purposes not a list", "garbage",
]


@pytest.mark.parametrize("attack", ATTACK_NAMES)
def test_token_attacks_are_refused(auth: Authenticator, keys: Keys, attack: str) -> None:
    with pytest.raises(IdentityError):
        auth.authenticate(bearer(_attacks(keys)[attack]), "127.0.0.1")


def test_leeway_tolerates_small_clock_skew(auth: Authenticator, keys: Keys) -> None:
    now = int(time.time())
    assert auth.verify(keys.mint("rsa", exp=now - 5)).id == "svc:crm"
    assert auth.verify(keys.mint("rsa", nbf=now + 5)).id == "svc:crm"


def test_cached_token_still_expires(
    auth: Authenticator, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    token = keys.mint("ec", exp=int(now) + 60)
    assert auth.verify(token).id == "svc:crm"
    monkeypatch.setattr("middleware.identity.time.time", lambda: now + 3600)
    with pytest.raises(IdentityError):
        auth.verify(token)


@pytest.mark.parametrize("value", ["", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token"])
def test_missing_or_non_bearer_authorization(auth: Authenticator, value: str) -> None:
    headers = {"authorization": value} if value else {}
    with pytest.raises(IdentityError):
        auth.authenticate(headers, "127.0.0.1")


def proxied(keys: Keys, caller: str = "svc:web", secret: str | None = None) -> dict[str, str]:
    return {"x-caller": caller, "x-guard-proxy-secret": secret or keys.proxy_secret}


def test_proxy_with_its_secret_from_a_trusted_peer(auth: Authenticator, keys: Keys) -> None:
    assert auth.authenticate(proxied(keys), "10.1.2.3") == Caller("svc:web", None, "proxy")
    assert auth.authenticate(proxied(keys), "::1").via == "proxy"


@pytest.mark.parametrize("peer", ["127.0.0.1", "11.0.0.1", "::2", None, "not-an-ip"])
def test_proxy_secret_from_an_untrusted_peer(
    auth: Authenticator, keys: Keys, peer: str | None
) -> None:
    # Even with an otherwise valid token: a misplaced identity header is an attack.
    headers = {**proxied(keys, "svc:support"), **bearer(keys.mint("rsa"))}
    with pytest.raises(IdentityError, match="proxy_address_not_trusted"):
        auth.authenticate(headers, peer)


@pytest.mark.parametrize("secret", [None, "", "wrong" * 8, "proxy-" + "p" * 26 + "-secreT",
                                    "\u00e9" * 40, "x" * 5000])
def test_caller_header_without_the_proxy_secret_is_refused(
    auth: Authenticator, keys: Keys, secret: str | None
) -> None:
    # From a trusted address and with a valid token: the address proves nothing.
    headers = {"x-caller": "svc:support", **bearer(keys.mint("rsa"))}
    if secret is not None:
        headers["x-guard-proxy-secret"] = secret
    with pytest.raises(IdentityError, match="proxy_not_authenticated"):
        auth.authenticate(headers, "10.1.2.3")


@pytest.mark.parametrize(("caller", "code"), [
    ("", "caller_header_invalid"), ("svc:a b", "caller_header_invalid"),
    ("svc:\x00", "caller_header_invalid"), ("s" * 257, "caller_header_too_large"),
    ("s" * 4_000_000, "caller_header_too_large")])
def test_bad_proxied_caller_ids_are_refused(
    auth: Authenticator, keys: Keys, caller: str, code: str
) -> None:
    with pytest.raises(IdentityError, match=code):
        auth.authenticate(proxied(keys, caller), "10.1.2.3")


def test_trusted_proxies_without_a_secret_refuse_to_start(keys: Keys) -> None:
    from guard._errors import ConfigError

    with pytest.raises(ConfigError, match="proxy_secret_file"):
        Authenticator.from_settings(keys.identity(trusted_proxies=["10.0.0.0/8"]))


def test_any_peer_with_the_secret_when_no_address_is_listed(keys: Keys) -> None:
    anywhere = Authenticator.from_settings(keys.identity(proxy_secret_file=keys.proxy_file))
    assert anywhere.authenticate(proxied(keys), None).id == "svc:web"


def test_proxy_secret_rotation_accepts_both(keys: Keys, tmp_path: Any) -> None:
    rotated = tmp_path / "proxy.secret"
    rotated.write_text(f"{'n' * 40}\n{keys.proxy_secret}\n")
    auth = Authenticator.from_settings(keys.identity(proxy_secret_file=rotated))
    assert auth.authenticate(proxied(keys, secret="n" * 40), None).id == "svc:web"
    assert auth.authenticate(proxied(keys), None).id == "svc:web"


@pytest.mark.parametrize("content", [b"", b"short\n", b"\xff" * 40])
def test_bad_proxy_secret_files_are_config_errors(tmp_path: Any, content: bytes) -> None:
    from guard._errors import ConfigError

    path = tmp_path / "proxy.secret"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="proxy secret"):
        Authenticator.from_settings(IdentitySettings(proxy_secret_file=path))


def test_proxy_header_ignored_when_no_proxy_is_configured(keys: Keys) -> None:
    plain = Authenticator.from_settings(keys.identity())
    with pytest.raises(IdentityError, match="no bearer token"):
        plain.authenticate(proxied(keys, "svc:support"), "10.0.0.1")
    caller = plain.authenticate({"x-caller": "svc:support", **bearer(keys.mint("rsa"))}, None)
    assert caller.id == "svc:crm"


def test_dev_key_created_private_and_stable(tmp_path: Any) -> None:
    path = tmp_path / "nested" / "dev.key"
    first = load_or_create_dev_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_dev_key(path)
    assert dev_key_id(first.public_key()) == dev_key_id(second.public_key())


@pytest.mark.parametrize("provider", ["jwks", "hs256", "proxy"])
def test_dev_tokens_refused_once_a_provider_is_configured(
    keys: Keys, tmp_path: Any, provider: str
) -> None:
    dev = IdentitySettings(dev_key=keys.dev_key)
    token = issue_token(dev, "svc:web", None, 60)
    assert keys.dev_key.exists()  # the key file exists, and still it is not trusted
    files = {"jwks": {"jwks_file": keys.jwks_file}, "hs256": {"hs256_secret_file": keys.hs_file},
             "proxy": {"proxy_secret_file": keys.proxy_file}}[provider]
    production = IdentitySettings(dev_key=keys.dev_key, **files)
    auth = Authenticator.from_settings(production)
    assert not auth.development
    with pytest.raises(IdentityError):
        auth.authenticate(bearer(token), None)
    explicit = Authenticator.from_settings(production.model_copy(update={"development": True}))
    assert explicit.development
    assert explicit.authenticate(bearer(token), None).id == "svc:web"


def test_development_mode_is_on_without_a_provider_and_says_so(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "absent.key"
    with caplog.at_level("WARNING", logger="guard.identity"):
        alone = Authenticator.from_settings(IdentitySettings(dev_key=missing))
    assert alone.development
    assert "development mode" in caplog.text
    token = issue_token(IdentitySettings(dev_key=missing), "svc:web", None, 60)
    assert alone.verify(token).id == "svc:web"


def test_development_off_without_a_provider_refuses_to_start(tmp_path: Any) -> None:
    from guard._errors import ConfigError

    with pytest.raises(ConfigError, match="no identity provider"):
        Authenticator.from_settings(IdentitySettings(dev_key=tmp_path / "k", development=False))
    with pytest.raises(ConfigError, match="development mode"):
        issue_token(IdentitySettings(dev_key=tmp_path / "k", development=False), "svc:x")


def test_bad_key_files_are_config_errors(tmp_path: Any) -> None:
    from guard._errors import ConfigError

    bad = tmp_path / "jwks.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="JWKS"):
        Authenticator.from_settings(IdentitySettings(jwks_file=bad, dev_key=tmp_path / "d"))
    short = tmp_path / "hs"
    short.write_bytes(b"short")
    with pytest.raises(ConfigError, match="shorter than 32"):
        Authenticator.from_settings(IdentitySettings(hs256_secret_file=short,
                                                     dev_key=tmp_path / "d"))
    with pytest.raises(ConfigError, match="CIDR"):
        Authenticator([], audience="a", issuer="i", trusted_proxies=["10.0.0.0/99"],
                      proxy_secrets=[b"s" * 32])


@given(st.text(max_size=300))
def test_any_authorization_value_is_refused_cleanly(value: str) -> None:
    auth = _HYPO_AUTH
    try:
        auth.authenticate({"authorization": "Bearer " + value}, "127.0.0.1")
    except IdentityError:
        return
    pytest.fail(f"accepted an arbitrary string: {value!r}")


_HYPO_AUTH = Authenticator([], audience="purpose-guard", issuer="purpose-guard-dev")
