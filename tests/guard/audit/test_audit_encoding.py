"""The journal writer's fast encoding gives the bytes the chain format defines, for any fields.

The reference is written out here with the standard library only: compact JSON
with ASCII escapes (``json``), HMAC-SHA256 (``hmac``) and SHA-256 (``hashlib``),
as docs/audit.md states the format. Floats are left out: the format writes them
as orjson does (``1e-7``, where the standard library writes ``1e-07``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.audit import EventKind
from guard.audit._event import FIELD_NAMES
from guard.audit._fields import ChainKey, Linker, Pseudonyms, content, decode_many
from guard.audit._journal import open_lane, read_journal
from guard.audit._jwriter import JournalWriter
from tests.guard.audit.conftest import CHAIN_KEY, HMAC_KEY, rows_of

LIST_FIELDS = ("categories", "rule", "lawful_basis")
CHAIN_FIELDS = ("writer_id", "seq", "prev_hash", "hash")
OTHER_FIELDS = tuple(name for name in FIELD_NAMES
                     if name not in (*LIST_FIELDS, *CHAIN_FIELDS, "kind", "allowed"))

# Any character: other scripts, line separators, control characters, DEL, lone surrogates.
TEXT = st.text(st.characters(codec=None), max_size=12)
SCALAR = (st.none() | st.booleans() | TEXT
          | st.integers(-(2**70), 2**70)  # past 64 bits too (orjson refuses those)
          | st.sampled_from([2**53, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1])
          | st.sampled_from(["\x7f", "\x00", "\u2028", "é", "日本", "\U0001f600", "],[", '"\\']))
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3), max_leaves=6)
ITEMS = st.lists(TEXT | st.sampled_from(["\x7f", "contact.email"]), max_size=3)
LISTED = ITEMS.map(tuple) | ITEMS | st.lists(VALUE, max_size=3)

FIELDS = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(OTHER_FIELDS, VALUE),
        **dict.fromkeys(LIST_FIELDS, LISTED),
        "allowed": st.none() | st.booleans() | st.integers(-3, 3),
        "subject_id": st.text(st.characters(codec="utf-8"), max_size=12),
    },
)


def ref_json(value: Any) -> bytes:
    """Compact JSON with ASCII escapes, by the standard library."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode()


def journal_keeps(value: Any) -> bool:
    """Would the journal give ``value`` back as it was, and could a store hold it? (No int
    outside the signed 64-bit range of SQLite and PostgreSQL, no lone surrogate: orjson,
    which reads the journal, refuses or changes those.)"""
    if isinstance(value, list):
        return all(journal_keeps(v) for v in value)
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return True


def reference(head: tuple[Any, ...], writer_id: str, seq: int, prev: str, key: bytes | None
              ) -> tuple[str, bytes]:
    """An event's chain hash and journal record as the format defines them."""
    body = ref_json(list(head))
    if key is not None:
        digest, tag = hmac.new(key, body, hashlib.sha256).hexdigest(), "v3"
    else:
        digest, tag = hashlib.sha256(body).hexdigest(), "v2"
    hash_ = hashlib.sha256(ref_json([tag, writer_id, seq, prev, digest])).hexdigest()
    return hash_, ref_json([*head, writer_id, seq, prev, hash_])


@settings(max_examples=200, deadline=None)
@given(fields=FIELDS, kind=st.sampled_from(list(EventKind)), writer=st.text(max_size=12),
       seq=st.integers(1, 2**63), prev=st.sampled_from(["0" * 64, "a" * 64]),
       keyed=st.booleans())
def test_a_linked_record_is_byte_for_byte_the_standard_librarys(
    fields: dict[str, Any], kind: EventKind, writer: str, seq: int, prev: str, keyed: bool
) -> None:
    head = content(kind, fields, Pseudonyms(HMAC_KEY), "2026-11-30T02:00:00.000000Z",
                   "0190e1b2-0000-7000-8000-000000000000")
    for name in LIST_FIELDS:  # each list column is the list's own compact JSON text
        column = FIELD_NAMES.index(name)
        assert head[column] == ref_json(list(fields.get(name, ()))).decode()
    key = CHAIN_KEY if keyed else None
    linker = Linker(writer, ChainKey(key) if key is not None else None)
    if not journal_keeps(list(head)):  # refused: the index could not read it back
        with pytest.raises(ValueError, match="not recordable in the journal"):
            linker.link(head, seq, prev)
        return
    hash_, record = linker.link(head, seq, prev)
    assert (hash_, record) == reference(head, writer, seq, prev, key)
    assert decode_many([record]) == ([*head, writer, seq, prev, hash_], [])


def test_an_event_the_journal_could_not_give_back_is_refused_alone(tmp_path: Path) -> None:
    journal = open_lane(tmp_path)
    writer = JournalWriter(journal, hmac_key=HMAC_KEY, signing_key=Ed25519PrivateKey.generate(),
                           writer_id="test", chain_key=ChainKey(CHAIN_KEY))
    try:
        got = writer.results(EventKind.DECISION, [
            {"caller": "a"}, {"caller": "\ud800"}, {"latency_us": 2**64}, {"caller": "é\x7f"},
            {"latency_us": 2**63}, {"http_status": -(2**63) - 1}, {"detail": [1, [2**64 - 1]]},
            {"latency_us": 2**63 - 1},
        ])
    finally:
        writer.close()
        journal.close()
    assert got[0] is not None
    assert got[1] is None  # a lone surrogate
    assert got[2] is None  # an int past 64 bits
    assert got[3] is not None
    assert got[4:7] == [None, None, None]  # fit orjson's 64 bits, but no store's signed 64
    assert got[7] is not None
    events = rows_of(decode_many(
        [record for _, record in read_journal(journal.folder)])[0])  # type: ignore[misc]
    assert [(row[0], row[3]) for row in events] == [(got[0], "a"), (got[3], "é\x7f"),
                                                    (got[7], "")]
    assert events[2][20] == 2**63 - 1
    assert events[1][-3:-1] == (2, events[0][-1])  # the chain goes on past the refused ones
