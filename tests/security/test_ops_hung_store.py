"""A hung audit database refuses requests within a bound; it never holds them for good.

A private PostgreSQL holds the audit store; the test SIGSTOPs it, so every
write to it hangs, and asks the sidecar's check endpoint for a decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from opskit import POLICIES, private_postgres
from sidecarkit import ServerThread, policy_copy

from bench._pg import free_port
from guard._guard import Guard
from guard.config import AuditSettings, PolicySettings, Settings, SidecarSettings
from middleware.sidecar import create_app


@pytest.mark.postgres
def test_a_request_waiting_on_a_hung_store_is_refused_audit_unavailable(
    tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Guard, "durable_within", 1.0)
    policy = policy_copy(tmp_path / "policy", POLICIES)
    with private_postgres() as pg:
        settings = Settings(
            policy=PolicySettings(dir=policy, watch=False),
            audit=AuditSettings(store=pg.url, hmac_key=tmp_path / "hmac.key",
                                signing_key=tmp_path / "signing.key"),
            identity=keys.identity(),
            sidecar=SidecarSettings(routes=policy / "routes.csv"),
        )
        headers = {"Authorization": f"Bearer {keys.mint('hs', sub='svc:crm')}",
                   "X-Purpose": "relationship.management",
                   "X-Original-URI": "/customers/c-0001", "X-Original-Method": "GET"}
        with ServerThread(create_app(settings), free_port()) as server:
            assert httpx.get(server.url + "/v1/check", headers=headers,
                             timeout=30).status_code == 200
            pg.pause()
            try:
                refused = httpx.get(server.url + "/v1/check", headers=headers, timeout=30)
            finally:
                pg.resume()
        assert refused.status_code == 403
        assert refused.json()["reason"] == "audit_unavailable"
