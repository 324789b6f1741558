"""Sixth review: a ``HEAD`` an endpoint does not take is not an access in the trail.

FastAPI's ``@app.get`` routes take ``GET`` alone (Starlette's own ``Route`` adds
``HEAD`` to a ``GET``); a ``HEAD`` reaches such a route only as a wrong method, and
the app answers 405 without running it. The guard took the ``GET`` declaration for
the ``HEAD`` all the same: an allowed read was recorded under the subject, and the
subject's right-of-access report listed the caller as a recipient of the route's
categories for a request that disclosed nothing. A ``HEAD`` now takes the ``GET``
declaration only from a route that takes ``HEAD``; to any other it is a method the
endpoint does not declare (``route_not_declared``, refused and recorded as a
denial). Real uvicorn, a FastAPI app with a Starlette app mounted in it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tokenkit import UvicornThread, audit_rows, guard_settings

from guard._guard import Guard
from guard.audit import pseudonymise
from guard.audit._keys import load_hmac_key
from middleware import GuardMiddleware, guarded
from tests.security.test_red4_fields import CALLER, PURPOSE

RAN: list[str] = []


def make_app(settings: Any, guard: Guard) -> FastAPI:
    app = FastAPI()

    @app.get("/customers/{customer_id}")
    @guarded(subject="customer_id", categories=["identity.name"])
    async def card(customer_id: str) -> str:
        RAN.append(f"card {customer_id}")
        return customer_id

    @guarded(subject="cid", categories=["identity.name"])
    async def legacy(request: Request) -> PlainTextResponse:
        RAN.append(f"legacy {request.path_params['cid']}")
        return PlainTextResponse("legacy")

    app.mount("/legacy", Starlette(routes=[Route("/customers/{cid}", legacy)]))
    app.add_middleware(GuardMiddleware, settings=settings, guard=guard)
    return app


def test_a_head_the_endpoint_does_not_take_is_not_recorded_as_an_access(
        tmp_path: Path, keys: Any) -> None:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    token = keys.mint(sub=CALLER)
    headers = {"authorization": f"Bearer {token}", "x-purpose": PURPOSE}
    try:
        with UvicornThread(make_app(settings, guard)) as server:
            RAN.clear()
            head = httpx.head(f"{server.url}/customers/c-0001", headers=headers, timeout=10)
            assert RAN == []  # FastAPI's GET route never runs for a HEAD
            assert head.status_code == 403, head.headers
            get = httpx.get(f"{server.url}/customers/c-0002", headers=headers, timeout=10)
            assert get.status_code == 200
            # Starlette's own GET route takes HEAD: judged as its GET, and it runs.
            legacy = httpx.head(f"{server.url}/legacy/customers/c-0003", headers=headers,
                                timeout=10)
            assert legacy.status_code == 200
            assert RAN == ["card c-0002", "legacy c-0003"]
    finally:
        guard.close()

    key = load_hmac_key(settings.audit.hmac_key)
    rows = audit_rows(tmp_path / "audit.db", "kind = 'decision'")
    by_subject = {r["subject"]: r for r in rows}
    assert pseudonymise(key, "c-0001") not in by_subject  # no access under the subject
    refused = [r for r in rows if r["http_method"] == "HEAD" and not r["allowed"]]
    assert [(r["allowed"], r["reason"]) for r in refused] == [(0, "route_not_declared")]
    assert by_subject[pseudonymise(key, "c-0002")]["allowed"] == 1
    judged = by_subject[pseudonymise(key, "c-0003")]
    assert (judged["allowed"], judged["http_method"], judged["http_status"]) == (1, "HEAD", 200)
    # The subject's access report lists no recipient for the HEAD that disclosed nothing.
    assert not [r for r in rows if r["allowed"] and r["http_status"] == 405]
