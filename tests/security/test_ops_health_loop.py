"""Health checks never block the event loop, even while the audit journal hangs or refuses.

The readiness probe appends a heartbeat to the journal. The test makes the
journal's next write hang in the kernel (its file swapped for a full pipe), then
makes it refuse (``/dev/full``).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from opskit import POLICIES
from sidecarkit import ServerThread, policy_copy, poll
from starlette.types import Receive, Scope, Send

from bench._pg import free_port
from guard.config import AuditSettings, PolicySettings, Settings, SidecarSettings
from middleware.sidecar import _health, create_app
from middleware.sidecar._state import build_sidecar
from tests.guard.audit.conftest import full_pipe


class Seen:
    """An ASGI wrapper that tells the test when the server has begun a ``/readyz``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.readyz = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/readyz":
            self.readyz.set()
        await self.app(scope, receive, send)


def _readyz(url: str) -> httpx.Response:
    return httpx.get(url + "/readyz", timeout=120)


def test_healthz_answers_while_readyz_waits_on_a_hung_then_refusing_journal(
    tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /readyz would answer 503 after 2 s; here it waits, so the ordering shows plainly.
    monkeypatch.setattr(_health, "PROBE_WAIT_SECONDS", 60.0, raising=False)
    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings = Settings(
        policy=PolicySettings(dir=policy, watch=False),
        audit=AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                            hmac_key=tmp_path / "hmac.key", signing_key=tmp_path / "signing.key",
                            readiness_probe_seconds=0.2),
        identity=keys.identity(),
        sidecar=SidecarSettings(routes=policy / "routes.csv"),
    )
    sidecar = build_sidecar(settings)
    segment = sidecar.guard.trail.journal._fd
    seen = Seen(create_app(sidecar=sidecar))
    with ServerThread(seen, free_port()) as server, ThreadPoolExecutor(4) as pool:
        url = server.url
        assert _readyz(url).status_code == 200
        pending: list[Future[httpx.Response]] = []
        read, write = full_pipe()
        good = os.dup(segment)
        os.dup2(write, segment)  # the journal's next append hangs
        try:
            time.sleep(1.5)  # older than the last proof of a write and the cached answer
            seen.readyz.clear()
            pending.append(pool.submit(_readyz, url))
            assert seen.readyz.wait(30), "the server never began the /readyz"
            alive = httpx.get(url + "/healthz", timeout=20)
            assert alive.status_code == 200
            assert not pending[0].done()  # /healthz answered while /readyz waits
            pending.append(pool.submit(_readyz, url))
            assert httpx.get(url + "/healthz", timeout=20).status_code == 200
            assert not any(p.done() for p in pending)
        finally:
            os.dup2(good, segment)
            os.close(read)  # the hung append fails (EPIPE)
            os.close(write)
            os.close(good)
        # The waiting checks get the failed probe's answer.
        assert [p.result(timeout=60).status_code for p in pending] == [503, 503]
        poll(lambda: _readyz(url).status_code == 200, timeout=30, step=0.2)  # writable again

        full = os.open("/dev/full", os.O_WRONLY)
        good = os.dup(segment)
        os.dup2(full, segment)  # refused for good: failures, not hangs
        try:
            gone = poll(lambda: (r := _readyz(url)).status_code == 503 and r.json(),
                        timeout=60, step=0.2)
            assert gone["audit"]["ok"] is False
            assert httpx.get(url + "/healthz", timeout=20).status_code == 200
        finally:
            os.dup2(good, segment)
            os.close(full)
            os.close(good)
