"""Who is calling: JWT service tokens and the trusted-proxy header.

Identity is proven, never declared: the caller id is the ``sub`` of a JWT whose
signature, ``exp``, ``nbf``, ``aud`` and ``iss`` check out against keys the
operator configured (a JWKS file, an HS256 secret file, and the local
development key), or the value of a header set by a reverse proxy whose peer
address is in a configured CIDR list.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard._errors import ConfigError, GuardError
from guard._secrets import key_id, load_ed25519_key
from guard.config import IdentitySettings

__all__ = [
    "ALGORITHMS",
    "Authenticator",
    "Caller",
    "IdentityError",
    "VerificationKey",
    "dev_key_id",
    "load_or_create_dev_key",
]

ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA", "HS256"})
"""The only JWS algorithms a token may use; ``none`` and everything else are refused."""

_CACHE_LIMIT = 4096


class IdentityError(GuardError):
    """No valid caller identity on the request (answered with 401)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """A proven caller.

    Args:
        id: The caller id, e.g. ``svc:crm`` (the token's ``sub``).
        purposes: The token's ``purposes`` claim, None when the token has none.
        via: ``jwt`` or ``proxy``.
    """

    id: str
    purposes: frozenset[str] | None
    via: str

    def may_declare(self, purpose: str) -> bool:
        """True if the token lets this caller declare ``purpose`` (itself or a descendant)."""
        if self.purposes is None:
            return True
        return any(purpose == p or purpose.startswith(p + ".") for p in self.purposes)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key a token may be verified with, bound to exactly one algorithm."""

    algorithm: str
    key: Any
    kid: str | None = None


def dev_key_id(public_key: Ed25519PublicKey) -> str:
    """The ``kid`` of the development key: a short digest of its public bytes."""
    return "dev-" + key_id(public_key)


def load_or_create_dev_key(path: Path) -> Ed25519PrivateKey:
    """Read the Ed25519 development key, creating it (mode 0600, atomically) on first use."""
    return load_ed25519_key(path, "development key", create=True)


def _jwks_keys(path: Path) -> list[VerificationKey]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the JWKS file {path}: {exc}") from exc
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"the JWKS file {path} has no \"keys\" list")
    keys: list[VerificationKey] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{path}: key #{index} is not usable: {exc}") from exc
        algorithm = jwk.algorithm_name
        if algorithm == "Ed25519":
            algorithm = "EdDSA"
        if algorithm not in ALGORITHMS - {"HS256"}:
            raise ConfigError(
                f"{path}: key #{index} uses {algorithm}; supported are RS256, ES256 and EdDSA"
            )
        keys.append(VerificationKey(algorithm, jwk.key, entry.get("kid")))
    return keys


def _hs256_key(path: Path) -> VerificationKey:
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the HS256 secret {path}: {exc}") from exc
    if len(secret) < 32:
        raise ConfigError(f"the HS256 secret {path} is shorter than 32 bytes")
    return VerificationKey("HS256", secret, None)


def _networks(
    cidrs: Iterable[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {cidr!r} is not an address or CIDR") from exc
    return tuple(nets)


class Authenticator:
    """Turns request headers and the peer address into a proven :class:`Caller`.

    Args:
        keys: The keys tokens may be signed with; each is bound to one algorithm.
        audience: The required ``aud``.
        issuer: The required ``iss``.
        leeway_seconds: Clock skew tolerated on ``exp`` and ``nbf``.
        trusted_proxies: Addresses or CIDRs whose ``caller_header`` is believed.
        caller_header: Lower-case header a trusted proxy sets to the caller id.
    """

    __slots__ = (
        "_by_alg",
        "_by_kid",
        "_cache",
        "audience",
        "caller_header",
        "issuer",
        "leeway",
        "proxies",
    )

    def __init__(
        self,
        keys: Iterable[VerificationKey],
        *,
        audience: str,
        issuer: str,
        leeway_seconds: int = 30,
        trusted_proxies: Iterable[str] = (),
        caller_header: str = "x-caller",
    ) -> None:
        self._by_kid: dict[str, VerificationKey] = {}
        self._by_alg: dict[str, list[VerificationKey]] = {}
        for key in keys:
            if key.algorithm not in ALGORITHMS:
                raise ConfigError(f"unsupported token algorithm {key.algorithm}")
            if key.kid is not None:
                if key.kid in self._by_kid:
                    raise ConfigError(f"two verification keys share the kid {key.kid!r}")
                self._by_kid[key.kid] = key
            self._by_alg.setdefault(key.algorithm, []).append(key)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway_seconds
        self.proxies = _networks(trusted_proxies)
        self.caller_header = caller_header.lower()
        self._cache: dict[str, tuple[Caller, float, float]] = {}

    @classmethod
    def from_settings(cls, settings: IdentitySettings) -> Authenticator:
        """Build from ``[identity]`` settings.

        The development key is created on first use when no identity provider
        is configured; with a JWKS file or an HS256 secret it is trusted only if
        its file already exists.
        """
        keys: list[VerificationKey] = []
        if settings.jwks_file is not None:
            keys += _jwks_keys(settings.jwks_file)
        if settings.hs256_secret_file is not None:
            keys.append(_hs256_key(settings.hs256_secret_file))
        if not keys or settings.dev_key.exists():
            public = load_or_create_dev_key(settings.dev_key).public_key()
            keys.append(VerificationKey("EdDSA", public, dev_key_id(public)))
        return cls(
            keys,
            audience=settings.audience,
            issuer=settings.issuer,
            leeway_seconds=settings.leeway_seconds,
            trusted_proxies=settings.trusted_proxies,
            caller_header=settings.caller_header,
        )

    def authenticate(self, headers: Mapping[str, str], peer: str | None) -> Caller:
        """The proven caller of a request.

        Args:
            headers: Request headers with lower-case names.
            peer: The client's IP address, if known.

        Raises:
            IdentityError: No token, a token that fails any check, or a proxy
                header from an address that is not a trusted proxy.
        """
        proxied = headers.get(self.caller_header) if self.proxies else None
        if proxied is not None:
            if not self._trusted(peer):
                raise IdentityError(f"{self.caller_header} header from an untrusted address")
            caller_id = proxied.strip()
            if not caller_id:
                raise IdentityError(f"empty {self.caller_header} header")
            return Caller(caller_id, None, "proxy")
        authorization = headers.get("authorization")
        if not authorization:
            raise IdentityError("no bearer token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise IdentityError("the Authorization header is not a bearer token")
        return self.verify(token.strip())

    def verify(self, token: str) -> Caller:
        """Verify one JWT and return its caller; raises :class:`IdentityError`."""
        hit = self._cache.get(token)
        if hit is None:
            hit = self._verify(token)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = hit
        caller, nbf, exp = hit
        now = time.time()
        if now >= exp + self.leeway:
            raise IdentityError("invalid token: the token has expired")
        if now < nbf - self.leeway:
            raise IdentityError("invalid token: the token is not yet valid (nbf)")
        return caller

    def _trusted(self, peer: str | None) -> bool:
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.proxies)

    def _verify(self, token: str) -> tuple[Caller, float, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise IdentityError(f"malformed token: {exc}") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise IdentityError(f"token algorithm {algorithm!r} is not accepted")
        kid = header.get("kid")
        if kid is not None:
            key = self._by_kid.get(kid) if isinstance(kid, str) else None
            if key is None:
                raise IdentityError("unknown key id")
            if key.algorithm != algorithm:
                raise IdentityError("token algorithm does not match its key")
            candidates = [key]
        else:
            candidates = [k for k in self._by_alg.get(algorithm, ()) if k.kid is None]
            if not candidates:
                raise IdentityError("token names no key id and no key fits its algorithm")
        last: jwt.PyJWTError | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    # exp and nbf are checked by verify() on one clock, cached or not.
                    options={"require": ["exp", "sub", "aud", "iss"],
                             "verify_exp": False, "verify_nbf": False},
                )
            except jwt.InvalidSignatureError as exc:
                last = exc
                continue
            except jwt.PyJWTError as exc:
                raise IdentityError(f"invalid token: {exc}") from exc
            return self._caller(claims)
        raise IdentityError(f"invalid token: {last}")

    @staticmethod
    def _caller(claims: Mapping[str, Any]) -> tuple[Caller, float, float]:
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise IdentityError("the token's sub is not a caller id")
        raw = claims.get("purposes")
        purposes: frozenset[str] | None
        if raw is None:
            purposes = None
        elif isinstance(raw, str):
            purposes = frozenset(raw.split())
        elif isinstance(raw, list) and all(isinstance(p, str) for p in raw):
            purposes = frozenset(raw)
        else:
            raise IdentityError("the token's purposes claim is not a list of purpose keys")
        exp, nbf = claims["exp"], claims.get("nbf", float("-inf"))
        if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
            raise IdentityError("the token's exp or nbf is not a number")
        return Caller(sub, purposes, "jwt"), float(nbf), float(exp)
