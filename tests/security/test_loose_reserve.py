"""One writer batch cannot carry the audit journal past its free-space reserve.

``POST /v1/decide`` takes up to 1 MiB of requests and records one event per
request: about the body's size in the journal, written in one or a few writer
batches. The writer now counts a batch's bytes against the free space before it
appends it (and keeps counting until the next reading), so a batch that would
pass the reserve is refused (its decisions are ``audit_unavailable``, fail
closed) instead of being written below it. The journal lives on a real 8 MB
tmpfs mounted for the test; a filler file leaves 500 kB above the 4 MB reserve.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from opskit import fill_disk, free_bytes
from sidecarkit import policy_copy, serve_sidecar, sidecar_settings

from guard.audit._health import DiskReserve

POLICIES = Path(__file__).resolve().parents[2] / "policies"
RESERVE_MB = 4
RESERVE = RESERVE_MB * 1_000_000
PAGES = 16 << 10
"""Slack for the filesystem's page rounding of the files the journal writes."""
READ_EVERY = 0.3
"""Longer than the reserve's reading is reused (0.25 s)."""


def _batch(requests: int) -> dict[str, Any]:
    """A decide batch of just under 1 MiB: 100 long (unknown) categories per request."""
    return {"requests": [
        {"purpose": "relationship.management",
         "categories": [f"c{n:03d}.{i:03d}." + "x" * 188 for i in range(100)]}
        for n in range(requests)]}


def test_a_decide_body_cannot_carry_the_journal_past_the_reserve(
    tmp_path: Path, small_disk: Path, keys: Any
) -> None:
    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings = sidecar_settings(tmp_path, policy, keys.identity())
    settings = settings.model_copy(update={"audit": settings.audit.model_copy(update={
        "journal": small_disk / "journal", "reserve_mb": RESERVE_MB})})
    bearer = {"authorization": f"Bearer {keys.mint('hs', sub='svc:crm')}"}
    with serve_sidecar(settings) as server:
        one = httpx.post(server.url + "/v1/decide", headers=bearer, timeout=30,
                         json={"purpose": "relationship.management", "categories": ["contact"]})
        assert one.json()["decision_id"]
        fill_disk(small_disk, leave=RESERVE + 500_000)
        time.sleep(READ_EVERY)  # the next batch reads the free space anew
        answer = httpx.post(server.url + "/v1/decide", headers=bearer, timeout=60,
                            json=_batch(50))
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        refused = [r for r in results if not r["decision_id"]]
        assert refused, "a megabyte of events fitted into 500 kB"
        assert {r["decision"]["reason"] for r in refused} == {"audit_unavailable"}
        assert free_bytes(small_disk) >= RESERVE - PAGES
        # A small event still goes in once there is room for it.
        (small_disk / "filler").unlink()
        time.sleep(READ_EVERY)
        again = httpx.post(server.url + "/v1/decide", headers=bearer, timeout=30,
                           json={"purpose": "relationship.management", "categories": ["contact"]})
        assert again.json()["decision_id"]


def test_batches_within_one_reading_count_together(small_disk: Path) -> None:
    """Free space is read at most every interval: the bytes admitted meanwhile are counted."""
    reserve = DiskReserve(small_disk, RESERVE, every=3600.0)  # one reading for the whole test
    room = free_bytes(small_disk) - RESERVE
    assert reserve.shortfall(room // 2) is None
    assert reserve.shortfall(room // 2) is None
    why = reserve.shortfall(room // 2)
    assert why is not None
    assert "reserve" in why
    assert reserve.shortfall() is None  # nothing written past it: not below the reserve
