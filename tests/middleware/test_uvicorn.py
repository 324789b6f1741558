"""The guarded example service under real uvicorn on loopback: demos, concurrency."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tokenkit import Keys, UvicornThread, audit_rows, guard_settings

from examples.customers import DEMOS, create_app, mint_tokens
from guard._guard import Guard

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("uvicorn")
    settings = guard_settings(base, keys)
    guard = Guard.from_settings(settings)
    with UvicornThread(create_app(settings, guard=guard)) as running:
        yield {"url": running.url, "db": base / "audit.db", "settings": settings,
               "tokens": mint_tokens(settings)}
    guard.close()


async def test_every_demo_over_loopback(server: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=server["url"]) as client:
        for demo in DEMOS:
            headers = {"x-purpose": demo.purpose} if demo.purpose else {}
            token = server["tokens"].get(demo)
            if token:
                headers["authorization"] = f"Bearer {token}"
            if demo.body:
                headers["content-type"] = "application/json"
            response = await client.request(demo.method, demo.path, headers=headers,
                                            content=demo.body)
            assert response.status_code == demo.status, (demo.title, response.text)
            if demo.status in (401, 403):
                assert response.json()["reason"] == demo.reason


# (caller, purpose, path, expected status)
MIX = [
    ("svc:crm", "relationship.management", "/customers/{cid}", 200),
    ("svc:billing", "order.processing", "/customers/{cid}/payment", 200),
    ("svc:analytics", "analytics.improvement", "/customers/stats", 200),
    ("svc:analytics", "relationship.management", "/customers/{cid}", 403),
    ("svc:auth", "business.administration", "/customers/{cid}", 403),
    (None, "relationship.management", "/customers/{cid}", 401),
    ("svc:crm", "relationship.management", "/customers/nobody", 404),
]


async def test_parallel_mixed_callers_one_event_each(keys: Keys, tmp_path: Path) -> None:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    from guard.cli._token import issue_token

    tokens = {c: issue_token(settings.identity, c, None, 600)
              for c in {m[0] for m in MIX if m[0]}}
    rng = random.Random(7)
    plan = [(rng.choice(MIX), f"c-{rng.randint(1, 100):04d}") for _ in range(240)]
    limit = asyncio.Semaphore(48)

    async def one(client: httpx.AsyncClient, item: Any) -> tuple[Any, httpx.Response]:
        (caller, purpose, path, _), cid = item
        headers = {"x-purpose": purpose}
        if caller:
            headers["authorization"] = f"Bearer {tokens[caller]}"
        async with limit:
            return item, await client.get(path.format(cid=cid), headers=headers)

    try:
        with UvicornThread(create_app(settings, guard=guard)) as running:
            limits = httpx.Limits(max_connections=48)
            async with httpx.AsyncClient(base_url=running.url, limits=limits) as client:
                results = await asyncio.gather(*(one(client, item) for item in plan))
    finally:
        guard.close()

    ids: dict[str, tuple[str | None, int]] = {}
    for ((caller, _, _, status), _), response in results:
        assert response.status_code == status
        if status in (200, 404):
            decision_id = response.headers["x-guard-decision-id"]
        else:
            decision_id = response.json()["decision_id"]
        assert decision_id not in ids
        ids[decision_id] = (caller, status)

    decisions = audit_rows(tmp_path / "audit.db", "kind = 'decision'")
    assert len(decisions) == len(plan)
    assert {r["event_id"] for r in decisions} == set(ids)
    for row in decisions:
        caller, status = ids[row["event_id"]]
        assert row["caller"] == (caller or "")
        assert bool(row["allowed"]) == (status in (200, 404))
        assert row["http_status"] == status  # one event per read, with the status sent
    assert audit_rows(tmp_path / "audit.db", "kind = 'outcome'") == []
