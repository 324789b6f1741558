"""Time-ordered event ids (UUID version 7, RFC 9562)."""

from __future__ import annotations

import random
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_prefix = (-1, "")  # the last millisecond's first 13 characters


def new_event_id() -> str:
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
    global _last_ms, _counter, _prefix
    now = time.time_ns() // 1_000_000
    random_hex = random.getrandbits(64 * count).to_bytes(8 * count).hex()  # 16 digits an id
    out: list[str] = []
    add = out.append
    with _lock:
        ms, counter = _last_ms, _counter
        if now > ms:
            ms, counter = now, random.getrandbits(10) - 1
        prefix_ms, prefix = _prefix
        for at in range(0, 16 * count, 16):
            counter += 1
            if counter > 0xFFF:
                ms, counter = ms + 1, 0
            if ms != prefix_ms:
                h = f"{ms:012x}"
                prefix, prefix_ms = f"{h[:8]}-{h[8:]}-7", ms
            r = random_hex[at:at + 16]  # the variant digit keeps 2 of its 4 bits: 62 random
            add(f"{prefix}{_HEX3[counter]}-{_VARIANT[r[0]]}{r[1:4]}-{r[4:]}")
        _last_ms, _counter, _prefix = ms, counter, (prefix_ms, prefix)
    return out


_HEX3 = [f"{n:03x}" for n in range(4096)]
_VARIANT = {f"{n:x}": f"{8 | n & 3:x}" for n in range(16)}  # RFC 9562 variant: 10xx
