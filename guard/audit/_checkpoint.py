"""Signed checkpoints: an Ed25519 signature over a writer's chain head."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard.audit._keys import key_id


class CheckpointKind(StrEnum):
    """Why a checkpoint was written."""

    OPEN = "open"
    """A writer's chain starts (seq 0, the genesis hash)."""
    PERIODIC = "periodic"
    """Every N events or on the timer."""
    CLOSE = "close"
    """The writer closed; no event of this writer may follow."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: writer ``writer_id``'s event ``seq`` has hash ``hash``."""

    checkpoint_id: str
    writer_id: str
    seq: int
    hash: str
    ts: str
    kind: CheckpointKind
    key_id: str
    signature: str

    def payload(self) -> bytes:
        """The bytes that are signed."""
        return signed_payload(self.writer_id, self.seq, self.hash, self.ts, self.kind)

    def valid(self, public: Ed25519PublicKey) -> bool:
        """True when the signature verifies with ``public``."""
        try:
            public.verify(bytes.fromhex(self.signature), self.payload())
        except (InvalidSignature, ValueError):
            return False
        return True


def signed_payload(writer_id: str, seq: int, hash_: str, ts: str, kind: CheckpointKind) -> bytes:
    """Canonical JSON of the checkpoint's signed fields."""
    data = {"hash": hash_, "kind": kind.value, "seq": seq, "ts": ts, "writer_id": writer_id}
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def sign_checkpoint(
    key: Ed25519PrivateKey,
    *,
    checkpoint_id: str,
    writer_id: str,
    seq: int,
    hash_: str,
    ts: str,
    kind: CheckpointKind,
) -> Checkpoint:
    """Sign the head of a chain."""
    signature = key.sign(signed_payload(writer_id, seq, hash_, ts, kind)).hex()
    return Checkpoint(
        checkpoint_id=checkpoint_id,
        writer_id=writer_id,
        seq=seq,
        hash=hash_,
        ts=ts,
        kind=kind,
        key_id=key_id(key.public_key()),
        signature=signature,
    )
