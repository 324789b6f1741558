"""Signed checkpoints: an Ed25519 signature over a writer's chain head."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from guard._secrets import key_id


class CheckpointKind(StrEnum):
    """Why a checkpoint was written."""

    OPEN = "open"  # a chain starts (seq 0, the genesis hash)
    PERIODIC = "periodic"  # every N events or on the timer
    COUNTERSIGN = "countersign"  # another writer signed a stopped chain's tail (_countersign)
    CLOSE = "close"  # the writer closed; no event of its chain may follow


@dataclass(frozen=True, slots=True)
class Terms:
    """What a chain's writer promises, signed into every checkpoint of the chain.

    ``chain``: the hash format (4 and 3: keyed with the chain key; 2: plain SHA-256).
    The writer signs at most ``every`` events and ``seconds`` seconds after the first
    event it has not signed yet.
    """

    chain: int
    every: int
    seconds: float

    def to_json(self) -> str:
        """Canonical JSON (the stored and signed form)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Terms:
        """Parse :meth:`to_json` output (ValueError: not a terms object)."""
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {"chain", "every", "seconds"}:
            raise ValueError(f"not checkpoint terms: {text!r}")
        return cls(int(data["chain"]), int(data["every"]), float(data["seconds"]))


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
    terms: str | None = None
    """:meth:`Terms.to_json` of the chain's terms; None for checkpoints made before terms."""

    def payload(self) -> bytes:
        """The bytes that are signed: canonical JSON of the signed fields (``terms`` when set)."""
        data: dict[str, object] = {"hash": self.hash, "kind": self.kind.value, "seq": self.seq,
                                   "ts": self.ts, "writer_id": self.writer_id}
        if self.terms is not None:
            data["terms"] = self.terms
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def well_typed(self) -> bool:
        """Does every field hold its own type (not a store's blob, not a journal's number)?"""
        texts = (self.checkpoint_id, self.writer_id, self.hash, self.ts, self.key_id)
        return (type(self.seq) is int and all(isinstance(t, str) for t in (*texts, self.signature))
                and isinstance(self.kind, CheckpointKind) and isinstance(self.terms, str | None))

    def valid(self, public: Ed25519PublicKey) -> bool:
        """True when the signature verifies with ``public``."""
        try:
            public.verify(bytes.fromhex(self.signature), self.payload())
        except (InvalidSignature, ValueError, TypeError):  # TypeError: not :meth:`well_typed`
            return False
        return True


def sign_checkpoint(
    key: Ed25519PrivateKey, *, checkpoint_id: str, writer_id: str, seq: int, hash_: str, ts: str,
    kind: CheckpointKind, terms: Terms | None = None,
) -> Checkpoint:
    """Sign the head of a chain (and the chain's terms, when given)."""
    cp = Checkpoint(checkpoint_id, writer_id, seq, hash_, ts, kind, key_id(key.public_key()), "",
                    terms.to_json() if terms is not None else None)
    return replace(cp, signature=key.sign(cp.payload()).hex())
