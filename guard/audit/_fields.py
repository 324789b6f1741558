"""Fields to journal records: rows, their chain hashes and their bytes, built by the writer.

Producers hand over ``(kind, fields)``; the journal writer builds each row here
once, serialises it once (orjson, checked to give exactly the bytes the chain
format is defined on) and links it into the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from guard.audit._checkpoint import Checkpoint
from guard.audit._event import AuditEvent, ChainKey, EventKind
from guard.audit._ids import new_event_id
from guard.audit._keys import pseudonymise
from guard.audit._schema import Row, checkpoint_row, row_checkpoint

_slow = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def compact(value: Sequence[Any]) -> bytes:
    """Compact JSON with ASCII escapes, the bytes the chain hashes are defined on.

    orjson gives the same bytes for ASCII text (it writes other characters and
    DEL unescaped, so those go to the standard encoder).
    """
    try:
        out = orjson.dumps(value)
    except TypeError:
        return _slow(value).encode()
    if out.isascii() and b"\x7f" not in out:
        return out
    return _slow(value).encode()


def event_fields(event: AuditEvent) -> dict[str, Any]:
    """The fields of a built :class:`AuditEvent` (its id, time and pseudonym kept)."""
    data = event.to_dict()
    for name in ("writer_id", "seq", "prev_hash", "hash"):
        del data[name]
    return data


class Pseudonyms:
    """Subject pseudonyms (HMAC-SHA256, hex, as :func:`guard.audit.pseudonymise`), keyed once.

    Args:
        key: The subject HMAC key.
    """

    __slots__ = ("_base",)

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, subject_id: str) -> str:
        mac = self._base.copy()
        mac.update(subject_id.encode("utf-8"))
        return mac.hexdigest()


def content(kind: EventKind, f: Mapping[str, Any], pseudonym: Pseudonyms | bytes, now: str,
            event_id: str | None = None) -> Row:
    """The content columns of an event from its fields (``guard.audit._event.content_row``).

    A raw ``subject_id`` is replaced by its pseudonym; ``event_id`` and ``ts`` are
    made here (or ``event_id`` given) unless the fields carry them.
    """
    raw = f.get("subject_id")
    if raw is None:
        subject = f.get("subject")
    elif isinstance(pseudonym, Pseudonyms):
        subject = pseudonym(raw)
    else:
        subject = pseudonymise(pseudonym, raw)
    allowed = f.get("allowed")
    return (
        f.get("event_id") or event_id or new_event_id(),
        kind.value,
        f.get("ts") or now,
        f.get("caller", ""),
        f.get("party_type"),
        f.get("country"),
        f.get("purpose", ""),
        compact(list(f.get("categories", ()))).decode(),
        f.get("action", ""),
        None if allowed is None else int(allowed),
        f.get("reason", ""),
        compact(list(f.get("rule", ()))).decode(),
        compact(list(f.get("lawful_basis", ()))).decode(),
        f.get("policy_version", ""),
        subject,
        f.get("http_method"),
        f.get("http_route"),
        f.get("http_status"),
        f.get("trace_id"),
        f.get("span_id"),
        f.get("latency_us"),
        f.get("decision_ref"),
        f.get("detail"),
    )


class Linker:
    """Places content rows in one chain: each row's hash and its journal record.

    Args:
        writer_id: The chain.
        key: The chain key (format 3); None writes format 2.
    """

    def __init__(self, writer_id: str, key: ChainKey | None) -> None:
        self.writer_id = writer_id
        self._key = key
        tag = "v3" if key is not None else "v2"
        self._prefix = compact([tag, writer_id])[:-1] + b","
        self._wid = compact([writer_id])[1:-1]

    def link(self, head: Row, seq: int, prev: str) -> tuple[str, bytes]:
        """The hash of ``head`` at ``seq`` after ``prev``, and the row's journal record."""
        body = compact(head)
        key = self._key
        digest = key.digest(body) if key is not None else hashlib.sha256(body).hexdigest()
        link = b'%s%d,"%s","%s"]' % (self._prefix, seq, prev.encode(), digest.encode())
        hash_ = hashlib.sha256(link).hexdigest()
        record = b'%s,%s,%d,"%s","%s"]' % (body[:-1], self._wid, seq, prev.encode(),
                                           hash_.encode())
        return hash_, record


def checkpoint_record(cp: Checkpoint) -> bytes:
    """A checkpoint's journal record: ``{"checkpoint": [columns]}``."""
    return b'{"checkpoint":' + orjson.dumps(list(checkpoint_row(cp))) + b"}"


def decode(payload: bytes) -> tuple[Row | None, Checkpoint | None]:
    """A journal record back to an event row or a checkpoint.

    Raises:
        ValueError: not a journal record.
    """
    value = orjson.loads(payload)
    if isinstance(value, list):
        return tuple(value), None
    if isinstance(value, dict) and isinstance(value.get("checkpoint"), list):
        return None, row_checkpoint(value["checkpoint"])
    raise ValueError("not an audit journal record")
