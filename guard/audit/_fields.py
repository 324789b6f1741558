"""Fields to journal records: rows, their chain hashes and their bytes, built by the writer.

Producers hand over ``(kind, fields)``; the journal writer builds each row here
once, serialises it once (orjson, checked to give exactly the bytes the chain
format is defined on) and links it into the chain.
"""

from __future__ import annotations

import hashlib
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

    The key's inner and outer hash states (RFC 2104) are made once; each pseudonym
    copies them, which costs a fraction of copying an :mod:`hmac` object.

    Args:
        key: The subject HMAC key.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def __call__(self, subject_id: str) -> str:
        inner = self._inner.copy()
        inner.update(subject_id.encode("utf-8"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


_BLOCK = 64  # SHA-256's block size
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_LISTED: dict[Any, str] = {}
_LISTED_MAX = 4096


def _listed(value: Any) -> str:
    """A list field's compact JSON text; a tuple of strings is made once (few distinct recur)."""
    try:
        return _LISTED[value]
    except (KeyError, TypeError):  # TypeError: a list (unhashable) is made every time
        pass
    text = compact(list(value)).decode()
    if type(value) is tuple and all(type(v) is str for v in value):
        if len(_LISTED) >= _LISTED_MAX:
            _LISTED.clear()
        _LISTED[value] = text
    return text


def content(kind: EventKind, f: Mapping[str, Any], pseudonym: Pseudonyms | bytes, now: str,
            event_id: str | None = None) -> Row:
    """The content columns of an event from its fields (``guard.audit._event.content_row``).

    A raw ``subject_id`` is replaced by its pseudonym; ``event_id`` and ``ts`` are
    made here (or ``event_id`` given) unless the fields carry them.
    """
    get = f.get
    raw = get("subject_id")
    if raw is None:
        subject = get("subject")
    elif isinstance(pseudonym, Pseudonyms):
        subject = pseudonym(raw)
    else:
        subject = pseudonymise(pseudonym, raw)
    allowed = get("allowed")
    return (
        get("event_id") or event_id or new_event_id(),
        kind.value,
        get("ts") or now,
        get("caller", ""),
        get("party_type"),
        get("country"),
        get("purpose", ""),
        _listed(get("categories", ())),
        get("action", ""),
        None if allowed is None else int(allowed),
        get("reason", ""),
        _listed(get("rule", ())),
        _listed(get("lawful_basis", ())),
        get("policy_version", ""),
        subject,
        get("http_method"),
        get("http_route"),
        get("http_status"),
        get("trace_id"),
        get("span_id"),
        get("latency_us"),
        get("decision_ref"),
        get("detail"),
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
        before = prev.encode()
        hash_ = hashlib.sha256(b'%s%d,"%s","%s"]' % (self._prefix, seq, before,
                                                     digest.encode())).hexdigest()
        return hash_, b'%s,%s,%d,"%s","%s"]' % (body[:-1], self._wid, seq, before,
                                                 hash_.encode())


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


def decode_many(payloads: Sequence[bytes]) -> tuple[list[Row], list[Checkpoint]]:
    """Journal records back to event rows and checkpoints, parsed as one JSON array.

    Falls back to :func:`decode` record by record when the array does not parse
    into exactly one value per record (which then names the bad one).

    Raises:
        ValueError: a record is not a journal record.
    """
    rows: list[Row] = []
    checkpoints: list[Checkpoint] = []
    try:
        values = orjson.loads(b"[" + b",".join(payloads) + b"]")
    except orjson.JSONDecodeError:
        values = None
    if values is None or len(values) != len(payloads):
        for payload in payloads:
            row, checkpoint = decode(payload)
            if row is not None:
                rows.append(row)
            elif checkpoint is not None:
                checkpoints.append(checkpoint)
        return rows, checkpoints
    for value in values:
        if type(value) is list:
            rows.append(tuple(value))
        elif type(value) is dict and type(value.get("checkpoint")) is list:
            checkpoints.append(row_checkpoint(value["checkpoint"]))
        else:
            raise ValueError("not an audit journal record")
    return rows, checkpoints
