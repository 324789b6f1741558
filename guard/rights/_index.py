"""The in-memory index of the register: pseudonym -> entries in force, compactly.

A million subjects must cost little memory and a subject with no entry almost
no time. Keys are the first 128 bits of the subject's HMAC (two sorted
``array('Q')``), states are packed into one ``bytearray`` (7 bytes an entry),
and a bitmap on the first 25 bits answers most look-ups of subjects with no
entry without a search or a lock.
"""

from __future__ import annotations

import struct
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from datetime import date

from guard.rights._entries import EntryKind, Record, State

_BITMAP_BITS = 25
BITMAP_SHIFT = _SHIFT = 64 - _BITMAP_BITS
_RECORD = struct.Struct("<BHI")  # kind, purpose id, day ordinal
_KINDS = tuple(EntryKind)
_KIND_CODE = {kind: code for code, kind in enumerate(_KINDS)}
_MAX_RECORDS = 255


def split_digest(digest: bytes) -> tuple[int, int]:
    """The two 64-bit halves of the first 128 bits of an HMAC digest."""
    return int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:16], "big")


class SubjectIndex:
    """Sorted keys, packed states and a bitmap; look-ups are safe beside updates."""

    __slots__ = (
        "_blob",
        "_garbage",
        "_hi",
        "_lo",
        "_lock",
        "_offsets",
        "_purpose_ids",
        "_purposes",
        "bitmap",
        "empty",
    )

    def __init__(self) -> None:
        self.bitmap = bytearray(1 << (_BITMAP_BITS - 3))
        self._hi = array("Q")
        self._lo = array("Q")
        self._offsets = array("I")
        self._blob = bytearray()
        self._garbage = 0
        self._purposes: list[str] = [""]
        self._purpose_ids: dict[str, int] = {"": 0}
        self._lock = threading.Lock()
        self.empty = True
        """Whether no subject has an entry (read without the lock, as :attr:`bitmap`)."""

    def __len__(self) -> int:
        return len(self._hi)

    def maybe(self, hi: int) -> bool:
        """False when no subject with these first 64 bits has an entry (no lock taken)."""
        bit = hi >> _SHIFT
        return bool(self.bitmap[bit >> 3] & (1 << (bit & 7)))

    def get(self, hi: int, lo: int) -> State | None:
        """The state stored for the key, or None."""
        bit = hi >> _SHIFT
        if not self.bitmap[bit >> 3] & (1 << (bit & 7)):
            return None
        with self._lock:
            pos = self._find(hi, lo)
            if pos < 0:
                return None
            return self._decode(self._offsets[pos])

    def _find(self, hi: int, lo: int) -> int:
        his, los = self._hi, self._lo
        pos = bisect_left(his, hi)
        while pos < len(his) and his[pos] == hi:
            if los[pos] == lo:
                return pos
            pos += 1
        return -1

    def _purpose_id(self, purpose: str) -> int:
        found = self._purpose_ids.get(purpose)
        if found is None:
            found = self._purpose_ids[purpose] = len(self._purposes)
            self._purposes.append(purpose)
        return found

    def _encode(self, state: State) -> int:
        if len(state) > _MAX_RECORDS:  # cannot happen: one record per kind and purpose
            raise ValueError("too many entries in force for one subject")
        offset = len(self._blob)
        out = bytearray([len(state)])
        for record in state:
            out += _RECORD.pack(_KIND_CODE[record.kind], self._purpose_id(record.purpose),
                                record.day.toordinal())
        self._blob += out
        return offset

    def _decode(self, offset: int) -> State:
        blob = self._blob
        count = blob[offset]
        records = []
        at = offset + 1
        for _ in range(count):
            kind, purpose, day = _RECORD.unpack_from(blob, at)
            records.append(Record(_KINDS[kind], self._purposes[purpose],
                                  date.fromordinal(day)))
            at += _RECORD.size
        return tuple(records)

    def put(self, hi: int, lo: int, state: State) -> None:
        """Store (or replace) the state for the key."""
        with self._lock:
            pos = self._find(hi, lo)
            offset = self._encode(state)
            if pos >= 0:
                old = self._offsets[pos]
                self._garbage += 1 + _RECORD.size * self._blob[old]
                self._offsets[pos] = offset
            else:
                pos = bisect_left(self._hi, hi)
                while pos < len(self._hi) and self._hi[pos] == hi and self._lo[pos] < lo:
                    pos += 1
                self._hi.insert(pos, hi)
                self._lo.insert(pos, lo)
                self._offsets.insert(pos, offset)
                bit = hi >> _SHIFT
                self.bitmap[bit >> 3] |= 1 << (bit & 7)
                self.empty = False
            if self._garbage > 1 << 20 and self._garbage > len(self._blob) // 2:
                self._compact()

    def load(self, items: Iterable[tuple[int, int, State]]) -> None:
        """Replace the whole index with ``items`` (one per subject), sorted once."""
        fresh = SubjectIndex()
        rows = sorted(items, key=lambda item: (item[0], item[1]))
        fresh._hi = array("Q", (r[0] for r in rows))
        fresh._lo = array("Q", (r[1] for r in rows))
        fresh._offsets = array("I", (fresh._encode(r[2]) for r in rows))
        bitmap = fresh.bitmap
        for hi in fresh._hi:
            bit = hi >> _SHIFT
            bitmap[bit >> 3] |= 1 << (bit & 7)
        with self._lock:
            self._hi, self._lo, self._offsets = fresh._hi, fresh._lo, fresh._offsets
            self._blob, self.bitmap, self._garbage = fresh._blob, fresh.bitmap, 0
            self._purposes, self._purpose_ids = fresh._purposes, fresh._purpose_ids
            self.empty = not rows

    def _compact(self) -> None:
        blob, self._blob = self._blob, bytearray()
        saved = self._blob
        for pos, offset in enumerate(self._offsets):
            count = blob[offset]
            self._offsets[pos] = len(saved)
            saved += blob[offset:offset + 1 + _RECORD.size * count]
        self._garbage = 0

    def nbytes(self) -> int:
        """Bytes held by the index's buffers (keys, offsets, states, bitmap)."""
        return (self._hi.buffer_info()[1] * self._hi.itemsize
                + self._lo.buffer_info()[1] * self._lo.itemsize
                + self._offsets.buffer_info()[1] * self._offsets.itemsize
                + len(self._blob) + len(self.bitmap))
