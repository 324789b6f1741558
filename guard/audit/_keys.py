"""Key files: the subject-pseudonym HMAC key and the checkpoint signing key."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard._errors import ConfigError
from guard._secrets import load_ed25519_key, read_key_file, write_secret

_HMAC_KEY_TEXT = re.compile(rb"[0-9a-fA-F]{64}")
"""The subject HMAC key as the guard writes it: 32 bytes as 64 hex digits."""


def load_hmac_key(path: Path, *, create: bool = False) -> bytes:
    """Read the HMAC key (64 hex digits, blanks around them allowed); with ``create``,
    generate it on first use.

    Anything else (a key cut short, text or bytes in its place, more after it) is
    refused: read as some other key, it would silently pseudonymise every subject
    anew, so the register's entries (erasures, objections) would match nobody.
    """
    if create and not path.exists():
        write_secret(path, secrets.token_hex(32).encode() + b"\n")
    try:
        raw = read_key_file(path, private=True)
    except OSError as exc:
        raise ConfigError(f"cannot read the subject HMAC key {path}: {exc.strerror}") from exc
    text = raw.strip()
    if _HMAC_KEY_TEXT.fullmatch(text) is None:
        raise ConfigError(f"subject HMAC key {path} is not 64 hex digits (32 bytes, as the "
                          f"guard writes it): it holds {len(raw)} bytes of something else")
    return bytes.fromhex(text.decode("ascii"))


def pseudonymise(key: bytes, subject_id: str) -> str:
    """The keyed pseudonym of a data-subject id: HMAC-SHA256, hex."""
    return hmac.new(key, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()


_CHAIN_KEY_LABEL = b"purpose-guard audit chain key v1"


def derive_chain_key(hmac_key: bytes) -> bytes:
    """The key of keyed (format 3 and 4) audit chains, derived from the subject HMAC key.

    HMAC-SHA256 of a fixed label under the HMAC key: whoever holds ``audit.hmac_key``
    (the guard, and auditors who can pseudonymise subjects) can link and check
    chains; the store itself never holds it.
    """
    return hmac.new(hmac_key, _CHAIN_KEY_LABEL, hashlib.sha256).digest()


def public_key_path(signing_key: Path) -> Path:
    """Where the public half of ``signing_key`` lives: ``<key>.pub``."""
    return signing_key.with_name(signing_key.name + ".pub")


def load_signing_key(path: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The Ed25519 checkpoint key (PEM, PKCS#8); generated with mode 0600 on first use."""
    loaded = load_ed25519_key(path, "audit signing key", create=create)
    pub = public_key_path(path)
    if not pub.exists():
        pub.write_bytes(
            loaded.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return loaded


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key (PEM) for verifying checkpoints."""
    try:
        loaded = serialization.load_pem_public_key(read_key_file(path))
    except OSError as exc:
        raise ConfigError(f"cannot read the audit public key {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"audit public key {path} is not a PEM public key") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigError(f"audit public key {path} is not an Ed25519 key")
    return loaded
