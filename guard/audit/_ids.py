"""Time-ordered event ids (UUID version 7, RFC 9562)."""

from __future__ import annotations

import random
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_event_id() -> str:
    """A UUIDv7 string (:func:`new_event_ids`)."""
    return new_event_ids(1)[0]


def new_event_ids(count: int) -> list[str]:
    """``count`` UUIDv7 strings in order, made under one lock (the journal writer's batch).

    Ids made by one process sort in the order they were made. The 48-bit
    millisecond timestamp is followed by a 12-bit counter (random start each
    millisecond, so ids stay unique across processes) and 62 random bits. The bits
    come from :mod:`random` (seeded from the OS, reseeded after ``fork``): ids must
    be unique, not secret, and ``os.urandom`` per id is a measurable cost. Ids of
    one millisecond share their first 13 characters, made once.
    """
    global _last_ms, _counter
    now = time.time_ns() // 1_000_000
    bits = random.getrandbits
    out: list[str] = []
    add = out.append
    with _lock:
        ms, counter = _last_ms, _counter
        if now > ms:
            ms, counter = now, bits(10) - 1
        prefix = ""
        prefix_ms = -1
        for _ in range(count):
            counter += 1
            if counter > 0xFFF:
                ms, counter = ms + 1, 0
            if ms != prefix_ms:
                h = f"{ms:012x}"
                prefix, prefix_ms = f"{h[:8]}-{h[8:]}-7", ms
            low = bits(62)
            add(f"{prefix}{counter:03x}-{0x8000 | low >> 48:04x}-{low & 0xFFFFFFFFFFFF:012x}")
        _last_ms, _counter = ms, counter
    return out
