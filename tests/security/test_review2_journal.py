"""Review of the newest fast paths: a journal that hangs or is damaged never costs the trail.

Decisions are appended to the journal off the event loop, so a disk that hangs
holds only the requests that wait for it (refused ``audit_unavailable`` within
``Guard.durable_within``), never ``/healthz`` or the deadline that refuses them.
The test makes the appends fast first (a quick disk: any path that commits on
the loop's own thread when the disk has proven fast would be taken), then makes
the journal's next write hang in the kernel (its file swapped for a full pipe).
A record damaged below the journal's published durable end (acknowledged, so
never a torn write) stops the journal from opening instead of being cut off
with every record after it.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from opskit import POLICIES
from sidecarkit import ServerThread, policy_copy

from bench._pg import free_port
from guard._errors import AuditUnavailableError
from guard._guard import Guard
from guard.audit._journal import Journal, durable_end, segments
from guard.config import AuditSettings, PolicySettings, Settings, SidecarSettings
from middleware.sidecar import create_app
from middleware.sidecar._state import build_sidecar
from tests.guard.audit.conftest import frame, full_pipe

CHECK = {"X-Purpose": "relationship.management", "X-Original-URI": "/customers/c-0001",
         "X-Original-Method": "GET"}


def test_a_hung_journal_after_fast_appends_leaves_the_event_loop_free(
    tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Guard, "durable_within", 1.0)
    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings = Settings(
        policy=PolicySettings(dir=policy, watch=False),
        audit=AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                            hmac_key=tmp_path / "hmac.key", signing_key=tmp_path / "signing.key"),
        identity=keys.identity(),
        sidecar=SidecarSettings(routes=policy / "routes.csv"),
    )
    sidecar = build_sidecar(settings)
    writer = sidecar.guard.trail.writer
    if hasattr(writer, "inline_within"):  # a disk as fast as any: every append counts as fast
        writer.inline_within = 60.0
    segment = sidecar.guard.trail.journal._fd
    headers = {"Authorization": f"Bearer {keys.mint('hs', sub='svc:crm')}", **CHECK}
    with ServerThread(create_app(sidecar=sidecar), free_port()) as server, \
            ThreadPoolExecutor(2) as pool:
        url = server.url
        for _ in range(24):  # one at a time: each event alone, each append quick
            assert httpx.get(url + "/v1/check", headers=headers, timeout=30).status_code == 200
        read, write = full_pipe()
        good = os.dup(segment)
        os.dup2(write, segment)  # the journal's next append hangs
        try:
            hung = pool.submit(httpx.get, url + "/v1/check", headers=headers, timeout=60)
            alive = pool.submit(httpx.get, url + "/healthz", timeout=60)
            # The loop is free: /healthz answers, and the deadline refuses the hung check.
            # (Bounded waits, so a stalled loop fails the test instead of hanging it.)
            with contextlib.suppress(Exception):
                alive.result(timeout=20)
            with contextlib.suppress(Exception):
                hung.result(timeout=20)
            answered = alive.done() and hung.done()
        finally:
            os.dup2(good, segment)
            os.close(read)  # the hung append fails (EPIPE): that batch was never acknowledged
            os.close(write)
            os.close(good)
        assert answered, "the event loop stalled behind the journal's hung write"
        assert alive.result().status_code == 200
        refused = hung.result()
        assert refused.status_code == 403
        assert refused.json()["reason"] == "audit_unavailable"
        # Writable again: decisions are durable and allowed once more.
        assert httpx.get(url + "/v1/check", headers=headers, timeout=30).status_code == 200


def test_a_damaged_record_below_the_durable_end_is_never_cut_off(tmp_path: Path) -> None:
    """One flipped byte in an acknowledged record must not delete every record after it."""
    lane = tmp_path / "lane-0"
    journal = Journal(lane)
    records = [b'{"n":%d}' % i for i in range(10)]
    for record in records:
        journal.append([record])
    journal.close()
    [(_, segment)] = segments(lane)
    damaged = bytearray(segment.read_bytes())
    damaged[sum(len(frame(r)) for r in records[:3]) + 10] ^= 0x01  # in record 3's payload
    segment.write_bytes(bytes(damaged))
    with pytest.raises(AuditUnavailableError, match="damaged below the durable end 10"):
        Journal(lane)
    assert segment.read_bytes() == bytes(damaged)  # nothing cut off
    assert durable_end(lane) == 10
    Journal(lane.parent / "lane-1").close()  # the folder's lock was let go: other lanes open


def test_a_torn_tail_past_the_durable_end_is_still_cut_off(tmp_path: Path) -> None:
    """What a writer never acknowledged (a frame cut short past the durable end) is dropped."""
    lane = tmp_path / "lane-0"
    journal = Journal(lane)
    journal.append([b'{"n":1}'])
    journal.close()
    [(_, segment)] = segments(lane)
    whole = segment.read_bytes()
    with segment.open("ab") as tail:
        tail.write(frame(b'{"n":2}')[:-3])
    reopened = Journal(lane)
    try:
        assert reopened.next_offset == durable_end(lane) == 1
        assert segment.read_bytes() == whole
    finally:
        reopened.close()
