"""A purpose value padded with blanks is not kept: a verified caller cannot fill the memory.

The planned path remembers each raw purpose value it found well-formed (``PURPOSES`` of
them), keyed by the value as it came. A value is judged stripped, so blanks after a
purpose (no-break spaces, which HTTP keeps in a value) make a new, valid value of any
length: uvicorn takes header lines of megabytes, and a caller with a valid token could
make the middleware keep 1,024 of them (8 MB each: 8 GB) by sending each once. Only
values of at most ``REMEMBERED_PURPOSE`` bytes are remembered now; a longer one is
judged the same, and forgotten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from tokenkit import UvicornThread

from tests.security.test_red4_fields import CALLER, PURPOSE
from tests.security.test_red11_method_cache import guarded_record

PADDED = 24
PAD = 200_000


def test_padded_purposes_are_judged_and_not_kept(tmp_path: Path, keys: Any) -> None:
    guard = guarded_record(tmp_path, keys)
    with UvicornThread(guard, log_level="critical") as served:
        token = keys.mint(sub=CALLER)
        with httpx.Client(base_url=served.url, timeout=30) as client:
            def ask(purpose: str) -> httpx.Response:
                return client.get("/records/c-1", headers={
                    "authorization": f"Bearer {token}", "x-purpose": purpose.encode("latin-1")})

            assert ask(PURPOSE).status_code == 200  # the token is known from here on
            for i in range(PADDED):  # each value new: one more blank each time (a no-break
                # space: HTTP keeps it in the value, str.strip() takes it off)
                answer = ask(PURPOSE + "\xa0" * (PAD + i))
                assert answer.status_code == 200, answer.text  # judged as PURPOSE
            assert ask("marketing.third_party").status_code == 403
    kept = sum(len(value) for value in guard._planner.purposes)
    # Before: every padded value kept whole (24 x 200 kB).
    assert kept < PADDED * 1024, f"{kept} bytes of purpose values kept"
