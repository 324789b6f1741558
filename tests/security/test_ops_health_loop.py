"""Health checks never block the event loop, even while the audit database hangs or is gone.

A private PostgreSQL (never the shared one) holds the audit store; the test
SIGSTOPs it, so that every connection to it hangs, then stops it for good.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from opskit import POLICIES, private_postgres
from sidecarkit import ServerThread, policy_copy, poll
from starlette.types import Receive, Scope, Send

from bench._pg import free_port
from guard.config import AuditSettings, PolicySettings, Settings, SidecarSettings
from middleware.sidecar import _health, create_app


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


@pytest.mark.postgres
@pytest.mark.parametrize("writer", ["thread"])
def test_healthz_answers_while_readyz_waits_on_a_hung_then_stopped_database(
    tmp_path: Path, keys: Any, writer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /readyz would answer 503 after 2 s; here it waits, so the ordering shows plainly.
    monkeypatch.setattr(_health, "PROBE_WAIT_SECONDS", 60.0, raising=False)
    policy = policy_copy(tmp_path / "policy", POLICIES)
    with private_postgres() as pg:
        settings = Settings(
            policy=PolicySettings(dir=policy, watch=False),
            audit=AuditSettings(store=pg.url, writer=writer, hmac_key=tmp_path / "hmac.key",
                                signing_key=tmp_path / "signing.key",
                                readiness_probe_seconds=0.2),
            identity=keys.identity(),
            sidecar=SidecarSettings(routes=policy / "routes.csv"),
        )
        seen = Seen(create_app(settings))
        with ServerThread(seen, free_port()) as server, ThreadPoolExecutor(4) as pool:
            url = server.url
            assert _readyz(url).status_code == 200
            pending: list[Future[httpx.Response]] = []
            pg.pause()
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
                pg.resume()
            # Once the database answers again, the waiting checks get its answer.
            assert [p.result(timeout=60).status_code for p in pending] == [200, 200]

            pg.stop()  # gone for good: refused connections, not hangs
            gone = poll(lambda: (r := _readyz(url)).status_code == 503 and r.json(),
                        timeout=60, step=0.2)
            assert gone["audit"]["ok"] is False
            assert httpx.get(url + "/healthz", timeout=20).status_code == 200
