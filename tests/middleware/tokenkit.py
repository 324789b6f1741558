"""Helpers of the middleware tests: keys, tokens, settings, audit rows, a uvicorn thread."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bench._pg import free_port
from guard.config import AuditSettings, IdentitySettings, Settings
from middleware.identity import load_or_create_dev_key

AUDIENCE = "purpose-guard"
ISSUER = "purpose-guard-dev"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A token built by hand: HS256 over ``secret``, or unsigned when None."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def claims(sub: str = "svc:crm", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": sub, "aud": AUDIENCE, "iss": ISSUER, "iat": now,
                            "nbf": now, "exp": now + 600}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    ed: ed25519.Ed25519PrivateKey
    other_rsa: rsa.RSAPrivateKey
    hs_secret: bytes
    jwks_file: Path
    hs_file: Path
    dev_key: Path
    proxy_secret: str
    proxy_file: Path

    def identity(self, **overrides: Any) -> IdentitySettings:
        # Development mode on, so tests may also use tokens from ``guard token issue``.
        values: dict[str, Any] = {"jwks_file": self.jwks_file, "hs256_secret_file": self.hs_file,
                                  "dev_key": self.dev_key, "audience": AUDIENCE,
                                  "issuer": ISSUER, "development": True}
        values.update(overrides)
        return IdentitySettings(**values)

    def rsa_public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def mint(self, kind: str = "rsa", **claim_overrides: Any) -> str:
        payload = claims(**claim_overrides)
        if kind == "rsa":
            return jwt.encode(payload, self.rsa, "RS256", headers={"kid": "rsa-1"})
        if kind == "ec":
            return jwt.encode(payload, self.ec, "ES256", headers={"kid": "ec-1"})
        if kind == "ed":
            return jwt.encode(payload, self.ed, "EdDSA", headers={"kid": "ed-1"})
        if kind == "hs":
            return jwt.encode(payload, self.hs_secret, "HS256")
        raise ValueError(kind)


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(key))
    data.update(kid=kid, alg=alg, use="sig")
    return data


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    base = tmp_path_factory.mktemp("keys")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    jwks = {"keys": [
        _jwk(rsa_key.public_key(), "rsa-1", "RS256"),
        _jwk(ec_key.public_key(), "ec-1", "ES256"),
        _jwk(ed_key.public_key(), "ed-1", "EdDSA"),
    ]}
    jwks_file = base / "jwks.json"
    jwks_file.write_text(json.dumps(jwks))
    secret = b"s" * 16 + b"e" * 16 + b"cret"
    hs_file = base / "hs256.secret"
    hs_file.write_bytes(secret)
    load_or_create_dev_key(base / "dev" / "dev-token.key")
    proxy_secret = "proxy-" + "p" * 26 + "-secret"
    proxy_file = base / "proxy.secret"
    proxy_file.write_text(proxy_secret + "\n")
    return Keys(rsa_key, ec_key, ed_key,
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                secret, jwks_file, hs_file, base / "dev" / "dev-token.key",
                proxy_secret, proxy_file)


Mint = Callable[..., str]


def guard_settings(base: Path, keys: Keys, **identity: Any) -> Settings:
    """Settings for one test guard: the shipped policy, SQLite audit under ``base``."""
    return Settings(
        audit=AuditSettings(store=f"sqlite:///{base / 'audit.db'}",
                            hmac_key=base / "subject-hmac.key",
                            signing_key=base / "audit-signing.key", writer_id="test"),
        identity=keys.identity(**identity),
    )


def audit_rows(db: Path, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Rows of the real SQLite audit store, as dicts (once it indexes the journal's end)."""
    import sqlite3

    from guard.audit import wait_indexed

    wait_indexed(AuditSettings(store=f"sqlite:///{db}"))

    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(f"SELECT * FROM audit_event WHERE {where}", params).fetchall()
    out = [dict(r) for r in rows]
    for row in out:
        for name in ("categories", "rule", "lawful_basis"):
            row[name] = tuple(json.loads(row[name]))
    return out


class UvicornThread:
    """A real uvicorn server on loopback, in a thread, for the length of a ``with``."""

    def __init__(self, app: Any, **options: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                **{"log_level": "warning", "lifespan": "on", **options})
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 60  # generous: a loaded machine starts slowly
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
