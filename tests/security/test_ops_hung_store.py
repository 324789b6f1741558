"""A hung audit database no longer holds requests; a hung journal refuses them within a bound.

The journal is the durable record and the database only its index: a private
PostgreSQL that is SIGSTOPped delays the index, never a decision, and the index
catches up once it answers. A journal whose writes hang (its file replaced by a
full pipe, so ``write`` blocks in the kernel) refuses requests
``audit_unavailable`` within ``Guard.durable_within``, never holds them for good.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from opskit import POLICIES, private_postgres
from sidecarkit import ServerThread, policy_copy

from bench._pg import free_port
from guard import Reason, Request
from guard._guard import Guard
from guard.audit import JournalTrail, open_store, wait_indexed
from guard.config import AuditSettings, PolicySettings, Settings, SidecarSettings
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from middleware.sidecar import create_app

HEADERS = {"X-Purpose": "relationship.management", "X-Original-URI": "/customers/c-0001",
           "X-Original-Method": "GET"}


@pytest.mark.postgres
def test_a_hung_database_delays_the_index_not_the_request(tmp_path: Path, keys: Any) -> None:
    policy = policy_copy(tmp_path / "policy", POLICIES)
    with private_postgres() as pg:
        settings = Settings(
            policy=PolicySettings(dir=policy, watch=False),
            audit=AuditSettings(store=pg.url, hmac_key=tmp_path / "hmac.key",
                                signing_key=tmp_path / "signing.key", journal=tmp_path / "j"),
            identity=keys.identity(),
            sidecar=SidecarSettings(routes=policy / "routes.csv"),
        )
        headers = {"Authorization": f"Bearer {keys.mint('hs', sub='svc:crm')}", **HEADERS}
        with ServerThread(create_app(settings), free_port()) as server:
            assert httpx.get(server.url + "/v1/check", headers=headers,
                             timeout=30).status_code == 200
            # Nothing of the index under way when the database stops: a transaction of the
            # child's idle-policy thread caught by the pause is finished only by that thread,
            # which a saturated machine may leave without a CPU for long after the resume.
            wait_indexed(settings.audit)
            pg.pause()
            try:
                during = httpx.get(server.url + "/v1/check", headers=headers, timeout=30)
            finally:
                pg.resume()
            assert during.status_code == 200
            wait_indexed(settings.audit)
            store = open_store(pg.url, create=False)
            try:
                found = store.rows("SELECT count(*) FROM audit_event WHERE event_id = ?",
                                   (during.headers["x-guard-decision-id"],))
            finally:
                store.close()
        assert found == [(1,)]


def test_a_hung_journal_refuses_within_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Guard, "durable_within", 1.0)
    trail = JournalTrail(AuditSettings(
        store=f"sqlite:///{tmp_path / 'audit.db'}", hmac_key=tmp_path / "hmac.key",
        signing_key=tmp_path / "signing.key"))
    guard = Guard(PolicyHolder(lambda: load_policy(None)), trail, hmac_key=b"h" * 32)
    request = Request("svc:crm", "relationship.management", ("contact",), subject="c-0001")
    assert asyncio.run(guard.acheck(request)).decision.allowed
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETFL, os.O_NONBLOCK)
    try:
        while True:  # fill the pipe: the next write blocks
            os.write(write, b"x" * 65536)
    except BlockingIOError:
        pass
    fcntl.fcntl(write, fcntl.F_SETFL, 0)
    segment = trail.journal._fd
    good = os.dup(segment)
    os.dup2(write, segment)
    try:
        hung = asyncio.run(guard.acheck(request))
    finally:
        os.dup2(good, segment)
        os.close(read)  # the blocked write fails (EPIPE): that batch was never acknowledged
        os.close(write)
        os.close(good)
    assert hung.decision.reason is Reason.AUDIT_UNAVAILABLE
    assert asyncio.run(guard.acheck(request)).decision.allowed
    guard.close()
