"""An audit record's one definition: its row, its chain hash, its journal bytes and its JSON.

Producers hand over ``(kind, fields)``; the journal writer builds each row here
once (:func:`content`), serialises and links it once (:class:`Linker`: orjson,
checked to give exactly the bytes the chain format is defined on). Verify and
countersigning link the stored row again with the same :class:`Linker`.
"""

from __future__ import annotations

import hashlib
import json
from binascii import hexlify
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from guard.audit._checkpoint import Checkpoint
from guard.audit._event import FIELD_NAMES, AuditEvent, EventKind
from guard.audit._journal import MAX_FRAME
from guard.audit._keys import pseudonymise
from guard.audit._schema import Row, checkpoint_row, row_checkpoint

_slow = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
_dumps = orjson.dumps
_sha256 = hashlib.sha256
_MAX_BODY = MAX_FRAME - 1024
"""An event's content at most: its record (with the chain's fields) fits a frame."""


def compact(value: Sequence[Any]) -> bytes:
    """Compact JSON with ASCII escapes, the bytes the chain hashes are defined on.

    orjson gives the same bytes for ASCII text (it writes other characters and
    DEL unescaped, so those go to the standard encoder).
    """
    try:
        out = _dumps(value)
    except TypeError:  # an int past 64 bits, a lone surrogate
        return _slow(value).encode()
    if out.isascii() and 0x7F not in out:
        return out
    return _slow(value).encode()


class ChainKey:
    """HMAC-SHA256 under one key (the chain key, or the subject key), its pads hashed once.

    The key's inner and outer hash states (RFC 2104) are made once; each digest
    copies them, which costs a fraction of copying an :mod:`hmac` object.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:  # SHA-256's block size
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, data: bytes) -> str:
        """HMAC-SHA256 (hex) of ``data`` under this key."""
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class Pseudonyms(ChainKey):
    """Subject pseudonyms under the subject HMAC key, as :func:`guard.audit.pseudonymise`
    makes them; the latest 4,096 kept, and those the subject register digested read from
    it (:meth:`share`)."""

    __slots__ = ("_made", "known")

    def __init__(self, key: bytes) -> None:
        super().__init__(key)
        self.known: dict[str, str] = {}
        """Raw subject id -> pseudonym, the latest made."""
        self._made: Mapping[str, tuple[int, bytes]] = {}

    def share(self, made: Mapping[str, tuple[int, bytes]], pseudonym: Callable[[str], str]
              ) -> bool:
        """Read the HMAC digests the subject register made (``made``: raw id -> (index
        key, digest), read live) instead of making them again.

        Only when the register's ``pseudonym`` is this key's (a register under another
        key is not shared: False); a subject it did not digest is digested here.
        """
        if pseudonym(_PROBE) != self.digest(_PROBE.encode()):
            return False
        self._made = made
        return True

    def __call__(self, subject_id: str) -> str:
        known = self.known
        if (value := known.get(subject_id)) is None:
            if len(known) >= 4096:
                known.clear()
            made = self._made.get(subject_id)
            value = known[subject_id] = (made[1].hex() if made is not None
                                         else self.digest(subject_id.encode("utf-8")))
        return value


_PROBE = "purpose-guard subject key probe"


_LISTED: dict[Any, str] = {}


def _listed(value: Any) -> str:
    """A list field's compact JSON text; a tuple of strings is made once (few distinct recur)."""
    try:
        return _LISTED[value]
    except (KeyError, TypeError):  # TypeError: a list (unhashable) is made every time
        pass
    text = compact(list(value)).decode()
    if type(value) is tuple and all(type(v) is str for v in value):
        if len(_LISTED) >= 4096:
            _LISTED.clear()
        _LISTED[value] = text
    return text


_KIND: dict[EventKind, str] = {kind: kind.value for kind in EventKind}


class IdFields(dict[str, Any]):
    """The fields of an event whose producer reads its id back from them.

    The writer sets the id it writes the event with (``setdefault``) when it builds
    the event; a producer that sets one the same way meanwhile gets the one the
    event is written with, whichever of them was first (the guard's refusal for
    want of time names its decision so, with no id made before it is needed).
    """

    __slots__ = ()


def content(kind: EventKind, f: Mapping[str, Any], pseudonym: Pseudonyms | bytes, now: str,
            event_id: str) -> Row:
    """The content columns of an event: every field but the chain fields, in field order.

    Lists are compact JSON arrays (text), ``allowed`` is 1, 0 or null, ``kind`` its
    value. A raw ``subject_id`` is replaced by its pseudonym; ``event_id`` and
    ``now`` (``ts``) are used unless the fields carry their own; :class:`IdFields`
    without an id get this one.
    """
    get = f.get
    own = get("event_id")
    if not own and isinstance(f, IdFields):
        own = f.setdefault("event_id", event_id)
    raw = get("subject_id")
    if raw is None:
        subject = get("subject")
    elif isinstance(pseudonym, Pseudonyms):
        subject = pseudonym.known.get(raw) or pseudonym(raw)
    else:
        subject = pseudonymise(pseudonym, raw)
    allowed = get("allowed")
    categories, rule, basis = get("categories", ()), get("rule", ()), get("lawful_basis", ())
    try:  # tuples of strings seen before: their text is kept
        categories, rule, basis = _LISTED[categories], _LISTED[rule], _LISTED[basis]
    except (KeyError, TypeError):
        categories, rule, basis = _listed(categories), _listed(rule), _listed(basis)
    return (
        own or event_id,
        _KIND[kind],
        get("ts") or now,
        get("caller", ""),
        get("party_type"),
        get("country"),
        get("purpose", ""),
        categories,
        get("action", ""),
        None if allowed is None else int(allowed),
        get("reason", ""),
        rule,
        basis,
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


def row_event(row: Sequence[Any]) -> AuditEvent:
    """Rebuild an event from a row selected with ``EVENT_COLUMNS``."""
    values: list[Any] = list(row)
    for index in _LIST_INDEXES:
        values[index] = tuple(json.loads(values[index]))
    if values[_ALLOWED] is not None:
        values[_ALLOWED] = bool(values[_ALLOWED])
    values[1] = EventKind(values[1])
    return AuditEvent(*values)


_LIST_INDEXES = tuple(FIELD_NAMES.index(name) for name in ("categories", "rule", "lawful_basis"))
_ALLOWED = FIELD_NAMES.index("allowed")


_STRICT = orjson.OPT_STRICT_INTEGER
_INT64 = range(-(2**63), 2**63)


def _outside_int64(value: Any) -> bool:
    """Does ``value`` (or a list in it) hold an int that SQLite's and PostgreSQL's
    64-bit integers cannot?"""
    if isinstance(value, int) and not isinstance(value, bool):
        return value not in _INT64
    return isinstance(value, list | tuple) and any(_outside_int64(v) for v in value)


def _wide(head: Row) -> bytes:
    """``head`` as compact JSON when an int in it passes 53 bits (the fast path's limit).

    Raises:
        ValueError: an int outside the signed 64-bit range, or a value orjson refuses.
    """
    if any(_outside_int64(value) for value in head):
        raise ValueError("not recordable in the journal: an integer outside the signed "
                         "64-bit range no store can hold")
    try:
        return _dumps(head)
    except TypeError as exc:
        raise ValueError(f"not recordable in the journal: {exc}") from None


class Linker:
    """Places content rows in one chain: each row's hash and its journal record.

    The bytes are those the chain format defines (docs/audit.md; property tests hold
    them equal to the standard library's JSON and ``hmac`` for any field values).

    Args:
        writer_id: The chain.
        key: The chain key; None links format 2 (older chains, read by verify).
        chain: The keyed format: 4 (one HMAC over the record), or 3 (read by verify).
    """

    def __init__(self, writer_id: str, key: ChainKey | None, chain: int = 3) -> None:
        self.writer_id, self._key, self._v4 = writer_id, key, key is not None and chain == 4
        self._prefix = compact(["v3" if key is not None else "v2", writer_id])[:-1] + b","
        self._wid = compact([writer_id])[1:-1]
        if key is not None and self._v4:
            self._inner, self._outer = key._inner.copy(), key._outer
            self._inner.update(b"v4")

    def link(self, head: Row, seq: int, prev: str) -> tuple[str, bytes]:
        """The hash of ``head`` at ``seq`` after ``prev``, and the row's journal record.

        Raises:
            ValueError: a value the journal could not give back as it was, or no store
                could hold (an int outside the signed 64-bit range, a lone surrogate,
                an object JSON has no form for), or a record over the journal's frame
                bound.
        """
        v4 = self._v4  # format 4 dumps the record up to its hash at once (no second format)
        row = (*head, self.writer_id, seq, prev) if v4 else head
        try:
            body = _dumps(row, option=_STRICT)  # ints past 53 bits raise: checked below
        except TypeError:
            body = _wide(row)
        if not body.isascii() or 0x7F in body:  # (an int: a bytes needle raises a TypeError first)
            body = _slow(row).encode()
        if len(body) > _MAX_BODY:  # its readers would take the frame for damage
            raise ValueError(f"not recordable in the journal: over {MAX_FRAME} bytes")
        if v4:  # HMAC(chain key, "v4" + the record up to its hash), pads hashed once
            inner = self._inner.copy()
            inner.update(unhashed := body[:-1])
            outer = self._outer.copy()
            outer.update(inner.digest())
            digest = hexlify(outer.digest())
            return digest.decode(), b"".join((unhashed, b',"', digest, b'"]'))
        before = prev.encode()
        key = self._key  # formats 3 and 2: a content digest inside a SHA-256 link
        digest = (key.digest(body) if key is not None else _sha256(body).hexdigest()).encode()
        hash_ = _sha256(b'%s%d,"%s","%s"]' % (self._prefix, seq, before, digest)).hexdigest()
        return hash_, b'%s,%s,%d,"%s","%s"]' % (body[:-1], self._wid, seq, before, hash_.encode())


def checkpoint_record(cp: Checkpoint) -> bytes:
    """A checkpoint's journal record: ``{"checkpoint": [columns]}``."""
    return b'{"checkpoint":' + orjson.dumps(list(checkpoint_row(cp))) + b"}"


def decode_many(payloads: Sequence[bytes]) -> tuple[list[Any], list[Checkpoint]]:
    """Journal records back to their events' column values and their checkpoints.

    The values are one flat list, ``len(FIELD_NAMES)`` an event in record order.
    Each record is parsed on its own (as few instructions as one array of them all,
    and no record's brackets can close another's); an event's record starts with its
    ``[``, as the writer writes it and as PostgreSQL's index tells events from
    checkpoints.

    Raises:
        ValueError: a record is not a journal record: not JSON, not an array of
            ``len(FIELD_NAMES)`` values starting the record, nor a checkpoint.
    """
    values: list[Any] = []
    checkpoints: list[Checkpoint] = []
    add = values.extend
    for payload in payloads:
        try:
            value = orjson.loads(payload)
            if type(value) is list and len(value) == _WIDTH and payload[:1] == b"[":
                add(value)
                continue
            checkpoints.append(row_checkpoint(value["checkpoint"]))
        except (ValueError, TypeError, KeyError, IndexError):  # orjson's error is a ValueError
            raise ValueError(f"not an audit journal record: not {_WIDTH} values or a "
                             "checkpoint") from None
    return values, checkpoints


_WIDTH = len(FIELD_NAMES)
