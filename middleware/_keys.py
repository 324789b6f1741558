"""The keys service tokens are verified with, read from files and re-read when they change."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from guard._errors import ConfigError, GuardError

__all__ = ["ALGORITHMS", "KeyFiles", "VerificationKey", "hs256_key", "jwks_keys"]

ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA", "HS256"})
"""The only JWS algorithms a token may use; ``none`` and everything else are refused."""

_log = logging.getLogger("guard.identity")


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key a token may be verified with, bound to exactly one algorithm."""

    algorithm: str
    key: Any
    kid: str | None = None


def jwks_keys(path: Path) -> list[VerificationKey]:
    """The signing keys of a JWKS file; raises ConfigError naming the file and the key."""
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


def hs256_key(path: Path) -> VerificationKey:
    """The shared HS256 secret (at least 32 bytes); raises ConfigError."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the HS256 secret {path}: {exc}") from exc
    if len(secret) < 32:
        raise ConfigError(f"the HS256 secret {path} is shorter than 32 bytes")
    return VerificationKey("HS256", secret, None)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class KeyFiles:
    """The JWKS file and HS256 secret, re-read when they change (checked every interval).

    A key removed from a file stops verifying tokens within ``refresh_seconds``.
    A file that becomes unreadable or invalid is logged and the keys last read
    from it stay in force until it is fixed.

    Args:
        jwks_file: The JWKS file, if any.
        hs256_secret_file: The HS256 secret file, if any.
        fixed: Keys that never change (the development key).
        refresh_seconds: How often the files' modification stamps are looked at.
        clock: Monotonic seconds (tests may pass their own).
    """

    __slots__ = ("_fixed", "_paths", "_stamps", "clock", "keys", "next_poll", "refresh")

    def __init__(
        self,
        jwks_file: Path | None,
        hs256_secret_file: Path | None,
        fixed: Iterable[VerificationKey] = (),
        *,
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._paths = (jwks_file, hs256_secret_file)
        self._fixed = list(fixed)
        self.clock = clock
        """The monotonic clock the interval is measured on."""
        self.refresh = refresh_seconds
        self._stamps = tuple(_stamp(p) if p else None for p in self._paths)
        self.keys = self._read()
        self.next_poll = clock() + refresh_seconds
        """When :meth:`poll` next looks at the files (on :attr:`clock`)."""

    def _read(self) -> list[VerificationKey]:
        jwks_file, hs_file = self._paths
        keys: list[VerificationKey] = []
        if jwks_file is not None:
            keys += jwks_keys(jwks_file)
        if hs_file is not None:
            keys.append(hs256_key(hs_file))
        return keys + self._fixed

    def poll(self) -> list[VerificationKey] | None:
        """New keys when a file changed since the last look (at most once per interval)."""
        now = self.clock()
        if now < self.next_poll:
            return None
        self.next_poll = now + self.refresh
        stamps = tuple(_stamp(p) if p else None for p in self._paths)
        if stamps == self._stamps:
            return None
        try:
            keys = self._read()
        except GuardError as exc:
            _log.error("key files changed but cannot be read; keeping the previous keys: %s", exc)
            return None
        self._stamps = stamps
        _log.info("verification keys re-read: %d key(s)", len(keys))
        self.keys = keys
        return keys
