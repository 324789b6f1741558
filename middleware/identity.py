"""Who is calling: JWT service tokens and identities asserted by an authenticated proxy.

Identity is proven, never declared: the caller id is the ``sub`` of a JWT whose
signature, ``exp``, ``nbf``, ``aud`` and ``iss`` check out against keys the
operator configured (a JWKS file, an HS256 secret file; the local development
key only in development mode), or the value of a header set by a reverse proxy
that proves itself with a configured proxy secret. A peer address is never
enough: servers rewrite it from headers the client chooses.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard._errors import ConfigError, GuardError
from guard._secrets import key_id, load_ed25519_key, read_key_file
from guard.config import IdentitySettings
from middleware._keys import ALGORITHMS, KeyFiles, VerificationKey

__all__ = [
    "ALGORITHMS",
    "MAX_CALLER_ID",
    "PROXY_SECRET_HEADER",
    "Authenticator",
    "Caller",
    "IdentityError",
    "VerificationKey",
    "dev_key_id",
    "development_mode",
    "load_or_create_dev_key",
    "load_proxy_secrets",
]

PROXY_SECRET_HEADER = "x-guard-proxy-secret"
"""The header a trusted proxy proves itself with (never forwarded upstream by the sidecar)."""

MAX_CALLER_ID = 256
"""The longest caller id, from a token's ``sub`` or a proxy's caller header."""

_MAX_PROXY_SECRET = 1024
_MAX_PEER = 64
_CACHE_LIMIT = 4096
_log = logging.getLogger("guard.identity")


class IdentityError(GuardError):
    """No valid caller identity on the request (answered with 401).

    Args:
        message: Why (a detail code such as ``proxy_not_authenticated``, or a sentence).
        asserted_by: When a caller header a proxy may assert was refused: the peer
            address that sent it (``-`` when unknown), for the audit event.
    """

    def __init__(self, message: str, *, asserted_by: str | None = None) -> None:
        super().__init__(message)
        self.asserted_by = asserted_by


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


def dev_key_id(public_key: Ed25519PublicKey) -> str:
    """The ``kid`` of the development key: a short digest of its public bytes."""
    return "dev-" + key_id(public_key)


def load_or_create_dev_key(path: Path) -> Ed25519PrivateKey:
    """Read the Ed25519 development key, creating it (mode 0600, atomically) on first use."""
    return load_ed25519_key(path, "development key", create=True)


def development_mode(settings: IdentitySettings) -> bool:
    """True when development tokens are accepted.

    ``identity.development`` decides when set; otherwise development mode is on
    exactly when no identity provider is configured (no JWKS file, no HS256
    secret, no proxy secret).
    """
    if settings.development is not None:
        return settings.development
    return (
        settings.jwks_file is None
        and settings.hs256_secret_file is None
        and settings.proxy_secret_file is None
    )


def load_proxy_secrets(path: Path) -> list[bytes]:
    """The proxy secrets in ``path``: one per line (two during a rotation), each >= 32 bytes."""
    try:
        lines = read_key_file(path, private=True).splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read the proxy secret {path}: {exc.strerror}") from exc
    secrets = [line.strip() for line in lines if line.strip()]
    if not secrets:
        raise ConfigError(f"the proxy secret file {path} is empty")
    for number, secret in enumerate(secrets, 1):
        where = f"the proxy secret file {path}: secret #{number}"
        if len(secret) < 32 or len(secret) > _MAX_PROXY_SECRET:
            raise ConfigError(f"{where} must be 32 to 1024 bytes long")
        if not all(0x21 <= byte <= 0x7E for byte in secret):
            raise ConfigError(f"{where} must be printable ASCII (it is sent as a header)")
    return secrets


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


def _valid_caller_id(value: str) -> bool:
    return (
        0 < len(value) <= MAX_CALLER_ID
        and value.isprintable()
        and not any(ch.isspace() for ch in value)
    )


class Authenticator:
    """Turns request headers (and the peer address) into a proven :class:`Caller`.

    Args:
        keys: The keys tokens may be signed with; each is bound to one algorithm.
            A :class:`KeyFiles` is re-read when its files change.
        audience: The required ``aud``.
        issuer: The required ``iss``.
        leeway_seconds: Clock skew tolerated on ``exp`` and ``nbf``.
        proxy_secrets: Secrets a reverse proxy proves itself with in
            ``X-Guard-Proxy-Secret``; none means no proxy may assert a caller.
        trusted_proxies: Addresses or CIDRs a proxy must also connect from (a
            narrowing only: the secret is what authenticates the proxy).
        caller_header: Lower-case header an authenticated proxy sets to the caller id.
        development: Whether the development key is among ``keys`` (shown in /readyz).
        max_token_bytes: Longest ``Authorization`` header that is parsed at all.
        cache_size: Verified tokens remembered (least recently used are dropped).
    """

    __slots__ = (
        "_by_alg",
        "_by_kid",
        "_cache",
        "_cache_size",
        "_dev_key",
        "_files",
        "_max_authorization",
        "_proxy_secrets",
        "_raw",
        "audience",
        "caller_header",
        "development",
        "issuer",
        "keys_set",
        "leeway",
        "proxied_by",
        "proxies",
    )

    def __init__(
        self,
        keys: Iterable[VerificationKey] | KeyFiles,
        *,
        audience: str,
        issuer: str,
        leeway_seconds: int = 30,
        proxy_secrets: Iterable[bytes] = (),
        trusted_proxies: Iterable[str] = (),
        caller_header: str = "x-caller",
        development: bool = False,
        max_token_bytes: int = 8192,
        cache_size: int = _CACHE_LIMIT,
    ) -> None:
        self._files = keys if isinstance(keys, KeyFiles) else None
        self._by_kid: dict[str, VerificationKey] = {}
        self._by_alg: dict[str, list[VerificationKey]] = {}
        self._cache: OrderedDict[str, tuple[Caller, float, float]] = OrderedDict()
        self._raw: dict[bytes, tuple[Caller, float, float]] = {}
        """Verified ``Authorization`` values as they came (bytes), for :meth:`known`."""
        self.keys_set = 0
        """How many times the verification keys were put in force (each time, every token
        verified before must be verified again: :meth:`holds`)."""
        self._cache_size = max(1, cache_size)
        self._set_keys(keys.keys if isinstance(keys, KeyFiles) else keys)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway_seconds
        self.proxies = _networks(trusted_proxies)
        self._proxy_secrets = tuple(proxy_secrets)
        if self.proxies and not self._proxy_secrets:
            raise ConfigError(
                "identity.trusted_proxies needs identity.proxy_secret_file: a proxy is "
                "authenticated by its secret, never by its address alone"
            )
        self.caller_header = caller_header.lower()
        self.proxied_by: bytes | None = (
            self.caller_header.encode("latin-1") if self._proxy_secrets else None)
        """The caller header as bytes when a proxy may assert a caller (else None)."""
        self.development = development
        self._dev_key: Path | None = None
        self._max_authorization = len("Bearer ") + max_token_bytes

    @classmethod
    def from_settings(cls, settings: IdentitySettings, *, announce: bool = True) -> Authenticator:
        """Build from ``[identity]`` settings.

        Args:
            settings: The ``[identity]`` section.
            announce: Log the development-mode warning now (else call :meth:`announce`
                when the service starts).

        Raises:
            ConfigError: an unreadable key file, or nothing a caller could
                authenticate with (development mode off and no provider).
        """
        development = development_mode(settings)
        fixed: list[VerificationKey] = []
        if development:
            public = load_or_create_dev_key(settings.dev_key).public_key()
            fixed.append(VerificationKey("EdDSA", public, dev_key_id(public)))
        files = KeyFiles(settings.jwks_file, settings.hs256_secret_file, fixed,
                         refresh_seconds=settings.key_refresh_seconds)
        secrets = (
            load_proxy_secrets(settings.proxy_secret_file)
            if settings.proxy_secret_file is not None
            else []
        )
        if not files.keys and not secrets:
            raise ConfigError(
                "identity.development is false but no identity provider is configured: "
                "set identity.jwks_file, identity.hs256_secret_file or identity.proxy_secret_file"
            )
        auth = cls(
            files,
            audience=settings.audience,
            issuer=settings.issuer,
            leeway_seconds=settings.leeway_seconds,
            proxy_secrets=secrets,
            trusted_proxies=settings.trusted_proxies,
            caller_header=settings.caller_header,
            development=development,
            max_token_bytes=settings.max_token_bytes,
            cache_size=settings.token_cache_size,
        )
        auth._dev_key = settings.dev_key
        if announce:
            auth.announce()
        return auth

    def announce(self) -> None:
        """Log a warning when development tokens are accepted (call it once, at start)."""
        if self.development:
            _log.warning(
                "development mode: tokens signed with the local development key %s are "
                "accepted; configure identity.jwks_file or hs256_secret_file for production",
                self._dev_key,
            )

    @property
    def header_names(self) -> tuple[str, ...]:
        """The lower-case request headers :meth:`authenticate` reads."""
        return ("authorization", self.caller_header, PROXY_SECRET_HEADER)

    def _set_keys(self, keys: Iterable[VerificationKey]) -> None:
        by_kid: dict[str, VerificationKey] = {}
        by_alg: dict[str, list[VerificationKey]] = {}
        for key in keys:
            if key.algorithm not in ALGORITHMS:
                raise ConfigError(f"unsupported token algorithm {key.algorithm}")
            if key.kid is not None:
                if key.kid in by_kid:
                    raise ConfigError(f"two verification keys share the kid {key.kid!r}")
                by_kid[key.kid] = key
            by_alg.setdefault(key.algorithm, []).append(key)
        self._by_kid, self._by_alg = by_kid, by_alg
        # A token verified with a key that may be gone is verified again.
        self._cache.clear()
        self._raw.clear()
        self.keys_set += 1

    def _look(self) -> None:
        """Put the key files' keys in force when they changed (at most once per interval)."""
        files = self._files
        changed = files.poll() if files is not None else None
        if files is None or changed is None:
            return
        try:
            self._set_keys(changed)
        except ConfigError as exc:  # keys the files hold together but not apart: none verify
            files.error = f"{exc}; no token verifies until the key files are fixed"
            _log.error("%s", files.error)
            self._set_keys([])

    @property
    def key_files_error(self) -> str | None:
        """Why the keys in force differ from the key files now, or None (looks when due)."""
        self._look()
        return self._files.error if self._files is not None else None

    def authenticate(self, headers: Mapping[str, str], peer: str | None) -> Caller:
        """The proven caller of a request.

        Args:
            headers: Request headers with lower-case names.
            peer: The client's IP address, if known.

        Raises:
            IdentityError: No token, a token that fails any check, or a caller
                header without a valid proxy secret.
        """
        proxied = headers.get(self.caller_header) if self._proxy_secrets else None
        if proxied is not None:
            return self._proxied(proxied, headers.get(PROXY_SECRET_HEADER), peer)
        authorization = headers.get("authorization")
        if not authorization:
            raise IdentityError("no bearer token")
        if len(authorization) > self._max_authorization:
            raise IdentityError("token_too_large")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise IdentityError("the Authorization header is not a bearer token")
        return self.verify(token.strip())

    def known(self, authorization: bytes | None, headers: Mapping[bytes, bytes]
              ) -> tuple[Caller, float, float] | None:
        """The caller :meth:`authenticate` would answer for a request whose ``Authorization``
        value was verified before, with its token's ``nbf`` and ``exp`` as kept:
        ``(caller, nbf, exp)``, the same tuple for as long as
        :meth:`remember` keeps the value (a caller's memo compares it by identity).

        None in every other case (not remembered, expired or not yet valid, the key files
        due to be looked at, a caller header a proxy may assert): then :meth:`authenticate`
        decides.

        Args:
            authorization: The request's first ``Authorization`` value, as it came.
            headers: The request's headers by lower-case name as bytes (the first of
                repeats), values as they came.
        """
        if authorization is None:
            return None
        hit = self._raw.get(authorization)
        if hit is None:
            return None
        if self._proves(hit, headers):
            return hit
        if time.time() >= hit[2] + self.leeway:  # expired: forgotten
            self._raw.pop(authorization, None)
        return None

    def holds(self, hit: tuple[Caller, float, float], keys_set: int,
              headers: Mapping[bytes, bytes]) -> bool:
        """Whether ``hit``, what :meth:`known` answered for a request's ``Authorization``
        value while the keys put in force were the ``keys_set``-th, still proves its caller
        for a request with ``headers`` and that same value: :meth:`known` would answer it.

        The value is not looked up again (its bytes are not hashed): the keys are still
        those it was verified with, the key files are not due to be looked at, no caller
        header a proxy may assert is present, and the token is valid now.

        Args:
            hit: ``(caller, nbf, exp)``, as :meth:`known` answered it.
            keys_set: :attr:`keys_set` when :meth:`known` answered it.
            headers: The request's headers by lower-case name as bytes.
        """
        return keys_set == self.keys_set and self._proves(hit, headers)

    def _proves(self, hit: tuple[Caller, float, float], headers: Mapping[bytes, bytes]) -> bool:
        """Whether a kept ``hit`` proves its caller now: no caller header a proxy may assert
        is present, the key files are not due to be looked at, the token is valid now."""
        proxied = self.proxied_by
        if proxied is not None and proxied in headers:
            return False
        files = self._files
        if files is not None and files.clock() >= files.next_poll:
            return False
        now = time.time()
        leeway = self.leeway
        return hit[1] - leeway <= now < hit[2] + leeway

    def remember(self, authorization: bytes, caller: Caller) -> None:
        """Keep a raw ``Authorization`` value that :meth:`authenticate` just proved ``caller`` with.

        Kept only when it is the value of a bearer token verified into the cache as
        this very caller (so :meth:`known` answers exactly what
        :meth:`authenticate` answered); bounded like the token cache, the oldest kept
        dropped first (a dropped value is kept again at its next request).

        Args:
            authorization: The request's first ``Authorization`` value, as it came.
            caller: The caller :meth:`authenticate` returned for it.
        """
        if caller.via != "jwt" or len(authorization) > self._max_authorization:
            return
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        hit = self._cache.get(token.strip())
        if scheme.lower() != "bearer" or hit is None or hit[0] is not caller:
            return
        raw = self._raw
        raw[authorization] = hit
        if len(raw) > self._cache_size:
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del raw[next(iter(raw))]

    @property
    def remembered(self) -> int:
        """How many raw ``Authorization`` values :meth:`known` can answer."""
        return len(self._raw)

    def _proxied(self, caller_id: str, secret: str | None, peer: str | None) -> Caller:
        by = (peer or "-")[:_MAX_PEER]  # who asserted it, for the audit event
        if len(caller_id) > MAX_CALLER_ID:
            raise IdentityError("caller_header_too_large", asserted_by=by)
        if not secret or len(secret) > _MAX_PROXY_SECRET or not self._proxy_known(secret):
            raise IdentityError("proxy_not_authenticated", asserted_by=by)
        if self.proxies and not self._trusted(peer):
            raise IdentityError("proxy_address_not_trusted", asserted_by=by)
        caller_id = caller_id.strip()
        if not _valid_caller_id(caller_id):
            raise IdentityError("caller_header_invalid", asserted_by=by)
        return Caller(caller_id, None, "proxy")

    def _proxy_known(self, secret: str) -> bool:
        try:
            given = secret.encode("ascii")
        except UnicodeEncodeError:
            return False
        # Compare with every secret (no early exit) so timing says nothing about which.
        found = False
        for known in self._proxy_secrets:
            found |= hmac.compare_digest(given, known)
        return found

    def verify(self, token: str) -> Caller:
        """Verify one JWT and return its caller; raises :class:`IdentityError`.

        Verified tokens are cached by their text (least recently used dropped
        first); an entry is never used past the token's ``exp`` or after the
        key files changed.
        """
        if len(token) > self._max_authorization:
            raise IdentityError("token_too_large")
        if self._files is not None:
            self._look()
        cache = self._cache
        hit = cache.get(token)
        now = time.time()
        # KeyError is ignored below: another thread may have evicted the same entry.
        if hit is None:
            hit = self._verify(token)
            if now < hit[2] + self.leeway:
                cache[token] = hit
                if len(cache) > self._cache_size:
                    with contextlib.suppress(KeyError):
                        cache.popitem(last=False)
        else:
            try:  # noqa: SIM105 - not a context manager on every request
                cache.move_to_end(token)
            except KeyError:
                pass
        caller, nbf, exp = hit
        if now >= exp + self.leeway:
            cache.pop(token, None)
            raise IdentityError("invalid token: the token has expired")
        if now < nbf - self.leeway:
            raise IdentityError("invalid token: the token is not yet valid (nbf)")
        return caller

    @property
    def cached(self) -> int:
        """How many verified tokens are cached."""
        return len(self._cache)

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
            raise IdentityError("token algorithm is not accepted")
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
        if not isinstance(sub, str) or not _valid_caller_id(sub):
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
        exp, nbf = claims["exp"], claims.get("nbf", 0)
        if (not isinstance(exp, int | float) or not isinstance(nbf, int | float)
                or not math.isfinite(exp) or not math.isfinite(nbf)):  # NaN passes every check
            raise IdentityError("the token's exp or nbf is not a number")
        return Caller(sub, purposes, "jwt"), float(nbf), float(exp)
