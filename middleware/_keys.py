"""The keys service tokens are verified with, read from files and re-read when they change."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from guard._errors import ConfigError, GuardError
from guard._secrets import read_key_file

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


def jwks_keys(path: Path, data: bytes | None = None) -> list[VerificationKey]:
    """The signing keys of a JWKS file; raises ConfigError naming the file and the key.

    Args:
        path: The JWKS file.
        data: Its content, when already read (else it is read now).
    """
    try:
        parsed = json.loads(read_key_file(path, private=True) if data is None else data)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the JWKS file {path}: {exc}") from exc
    entries = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"the JWKS file {path} has no \"keys\" list")
    keys: list[VerificationKey] = []
    kids: set[str] = set()
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
        kid = entry.get("kid")
        if kid is not None and (not isinstance(kid, str) or kid in kids):
            raise ConfigError(f"{path}: key #{index}'s kid {kid!r} is not a string or repeated")
        if kid is not None:
            kids.add(kid)
        keys.append(VerificationKey(algorithm, jwk.key, kid))
    return keys


def hs256_key(path: Path, data: bytes | None = None) -> VerificationKey:
    """The shared HS256 secret (at least 32 bytes); raises ConfigError.

    Args:
        path: The secret file.
        data: Its content, when already read (else it is read now).
    """
    try:
        secret = (read_key_file(path, private=True) if data is None else data).strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the HS256 secret {path}: {exc}") from exc
    if len(secret) < 32:
        raise ConfigError(f"the HS256 secret {path} is shorter than 32 bytes")
    return VerificationKey("HS256", secret, None)


_Parse = Callable[[Path, bytes], list[VerificationKey]]


def _hs256_keys(path: Path, data: bytes) -> list[VerificationKey]:
    return [hs256_key(path, data)]


class _KeyFile:
    """One key file: the content its keys in force were read from, and why not the newest."""

    __slots__ = ("content", "keys", "name", "parse", "path", "problem")

    def __init__(self, path: Path, name: str, parse: _Parse) -> None:
        self.path, self.name, self.parse = path, name, parse
        try:  # at start a configured file must be there
            self.content: bytes | None = read_key_file(path, private=True)
        except OSError as exc:
            raise ConfigError(f"cannot read the {name} {path}: {exc.strerror}") from exc
        self.keys = parse(path, self.content)
        self.problem: str | None = None

    def look(self) -> bool:
        """Read the file again; True when the keys in force from it changed.

        A file that is gone takes its keys with it (fail closed); one that cannot be
        read or parsed keeps the keys last read from it, and :attr:`problem` says why.
        """
        try:
            data: bytes | None = read_key_file(self.path, private=True)
        except (FileNotFoundError, NotADirectoryError):
            data = None
        except OSError as exc:
            self.problem = (f"cannot read the {self.name} {self.path}: {exc.strerror}; "
                            "keeping the keys last read from it")
            return False
        if data is None:
            self.problem = (f"the {self.name} {self.path} is gone: "
                            "no token signed with its keys verifies")
            changed, self.keys, self.content = self.content is not None, [], None
            return changed
        if data == self.content:
            self.problem = None
            return False
        try:
            keys = self.parse(self.path, data)
        except GuardError as exc:
            self.problem = f"{exc}; keeping the keys last read from it"
            return False
        self.keys, self.content, self.problem = keys, data, None
        return True


class KeyFiles:
    """The JWKS file and HS256 secret, read again every interval.

    A key removed from a file, or a file deleted, stops verifying tokens within
    ``refresh_seconds`` (fail closed). A file that becomes unreadable or invalid is
    logged and the keys last read from it stay in force until it is fixed;
    :attr:`error` says why meanwhile. A file is compared by its content, not its
    modification stamp, so a same-size rewrite in place within one timestamp tick
    counts too.

    Args:
        jwks_file: The JWKS file, if any.
        hs256_secret_file: The HS256 secret file, if any.
        fixed: Keys that never change (the development key).
        refresh_seconds: How often the files are read again.
        clock: Monotonic seconds (tests may pass their own).
    """

    __slots__ = ("_files", "_fixed", "clock", "error", "keys", "next_poll", "refresh")

    def __init__(
        self,
        jwks_file: Path | None,
        hs256_secret_file: Path | None,
        fixed: Iterable[VerificationKey] = (),
        *,
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._files: list[_KeyFile] = []
        if jwks_file is not None:
            self._files.append(_KeyFile(jwks_file, "JWKS file", jwks_keys))
        if hs256_secret_file is not None:
            self._files.append(_KeyFile(hs256_secret_file, "HS256 secret", _hs256_keys))
        self._fixed = list(fixed)
        self.clock = clock
        """The monotonic clock the interval is measured on."""
        self.refresh = refresh_seconds
        self.error: str | None = None
        """Why the keys in force differ from what the files say now (None: they agree)."""
        self.keys = self._keys()
        self.next_poll = clock() + refresh_seconds
        """When :meth:`poll` next reads the files (on :attr:`clock`)."""

    def _keys(self) -> list[VerificationKey]:
        keys = [key for file in self._files for key in file.keys]
        return keys + self._fixed

    def poll(self) -> list[VerificationKey] | None:
        """The keys in force when a file changed since the last look (at most once per interval)."""
        now = self.clock()
        if now < self.next_poll:
            return None
        self.next_poll = now + self.refresh
        changed = False
        for file in self._files:
            changed |= file.look()
        error = "; ".join(f.problem for f in self._files if f.problem) or None
        if error is not None and error != self.error:
            _log.error("a key file cannot be read as it is now: %s", error)
        self.error = error
        if not changed:
            return None
        self.keys = self._keys()
        _log.info("verification keys re-read: %d key(s)", len(self.keys))
        return self.keys
