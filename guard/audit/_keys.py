"""Key files: the subject-pseudonym HMAC key and the checkpoint signing key."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard._errors import ConfigError


def _write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 (parent 0700) and write ``data``, refusing to overwrite."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def load_hmac_key(path: Path, *, create: bool = False) -> bytes:
    """Read the HMAC key (64 hex characters); with ``create``, generate it on first use."""
    if create and not path.exists():
        _write_secret(path, secrets.token_hex(32).encode() + b"\n")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the subject HMAC key {path}: {exc.strerror}") from exc
    text = raw.strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < 16:
        raise ConfigError(f"subject HMAC key {path} is shorter than 16 bytes")
    return key


def pseudonymise(key: bytes, subject_id: str) -> str:
    """The keyed pseudonym of a data-subject id: HMAC-SHA256, hex."""
    return hmac.new(key, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()


def public_key_path(signing_key: Path) -> Path:
    """Where the public half of ``signing_key`` lives: ``<key>.pub``."""
    return signing_key.with_name(signing_key.name + ".pub")


def load_signing_key(path: Path, *, create: bool = True) -> Ed25519PrivateKey:
    """The Ed25519 checkpoint key (PEM, PKCS#8); generated with mode 0600 on first use."""
    if create and not path.exists():
        key = Ed25519PrivateKey.generate()
        _write_secret(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the audit signing key {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"audit signing key {path} is not a PEM private key") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ConfigError(f"audit signing key {path} is not an Ed25519 key")
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
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the audit public key {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"audit public key {path} is not a PEM public key") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise ConfigError(f"audit public key {path} is not an Ed25519 key")
    return loaded


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of its SHA-256."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]
