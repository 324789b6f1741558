"""Fifth review: a shared cache in front of a guarded app never keeps a judged answer.

The sidecar's fix (``test_red5_shared_cache``), for the ASGI middleware. An app not
written for the guard marks its answers ``public``, ``s-maxage=...`` or speaks to
the cache directly (``X-Accel-Expires``); the middleware passed those on, so
nginx's ``proxy_cache`` in front kept one caller's answer and served it to a
client with no token, unjudged and unaudited. Every answer to a request the
middleware judged now leaves ``Cache-Control: private`` (``no-store`` kept) with
the shared-cache headers dropped: a whole read, a streamed read, a minimised read
and a write alike. An answer on a public route passes as it came. Real nginx with
a cache zone in front of a real uvicorn serving a FastAPI app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from sidecarkit import Nginx, need_nginx
from tokenkit import UvicornThread, guard_settings

from bench._pg import free_port
from guard._guard import Guard
from middleware import GuardMiddleware

PURPOSE = "relationship.management"  # svc:crm may read contact under it
CALLERS = {"contact": ("svc:crm", PURPOSE), "record": ("svc:crm", PURPOSE),
           "payment": ("svc:billing", "order.processing")}  # who may read each shape
SECRET = "secret of c-1"

# Each answer marks itself for shared caches its own way.
MARKS: dict[str, dict[str, str]] = {
    "public": {"cache-control": "public, max-age=600"},
    "s-maxage": {"cache-control": "s-maxage=600"},
    "x-accel-expires": {"x-accel-expires": "600"},  # no Cache-Control at all
}


def make_app(settings: Any, guard: Guard) -> FastAPI:
    """Reads (whole, streamed, minimised), a write and a public route, marked by ``?mark=``."""
    app = FastAPI()

    @app.get("/customers/{customer_id}/contact")
    async def contact(customer_id: str, mark: str) -> JSONResponse:
        return JSONResponse({"email": SECRET}, headers=MARKS[mark])

    @app.get("/customers/{customer_id}/payment")
    async def payment(customer_id: str, mark: str) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"card": "'
            yield SECRET.encode() + b'"}'
        return StreamingResponse(chunks(), media_type="application/json", headers=MARKS[mark])

    @app.get("/customers/{customer_id}/record")
    async def record(customer_id: str, mark: str) -> JSONResponse:
        return JSONResponse({"contact": {"email": SECRET}}, headers=MARKS[mark])

    @app.put("/customers/{customer_id}/contact")
    async def change(customer_id: str) -> JSONResponse:
        return JSONResponse({"ok": True}, headers={
            "cache-control": "public, no-store, max-age=60", "surrogate-control": "max-age=60",
            "CDN-Cache-Control": "max-age=60"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"ok": True}, headers={"cache-control": "public, max-age=600",
                                                   "x-accel-expires": "600"})

    app.add_middleware(GuardMiddleware, settings=settings, guard=guard)
    return app


@pytest.fixture
def cached_app(tmp_path: Path, keys: Any) -> Iterator[str]:
    """The front nginx's URL: a cache zone in front of uvicorn serving the guarded app."""
    need_nginx()
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    front = free_port()
    try:
        with UvicornThread(make_app(settings, guard)) as served:
            nginx = Nginx(tmp_path / "nginx", f"""
    proxy_cache_path {tmp_path / 'nginx' / 'cache'} levels=1 keys_zone=guarded:1m;
    server {{
        listen 127.0.0.1:{front};
        location / {{
            proxy_cache guarded;
            proxy_pass http://127.0.0.1:{served.port};
            add_header X-Cache $upstream_cache_status always;
        }}
    }}""").start(front)
            try:
                yield f"http://127.0.0.1:{front}"
            finally:
                nginx.stop()
    finally:
        guard.close()


@pytest.mark.parametrize("shape", ["contact", "payment", "record"])
@pytest.mark.parametrize("mark", list(MARKS))
def test_a_judged_answer_is_never_served_from_a_shared_cache(
        cached_app: str, keys: Any, shape: str, mark: str) -> None:
    url = f"{cached_app}/customers/c-1/{shape}?mark={mark}"
    caller, purpose = CALLERS[shape]
    allowed = httpx.get(url, timeout=10, headers={
        "authorization": f"Bearer {keys.mint(sub=caller)}", "x-purpose": purpose})
    assert allowed.status_code == 200, allowed.text
    if shape != "record":  # the minimised read may withhold the field: its headers count
        assert SECRET in allowed.text

    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 401, (anonymous.headers.get("x-cache"), anonymous.text)
    assert anonymous.headers.get("x-cache") != "HIT"
    assert SECRET not in anonymous.text
    assert allowed.headers["cache-control"].startswith("private")
    assert "public" not in allowed.headers["cache-control"]
    assert "x-accel-expires" not in allowed.headers
    assert allowed.headers["x-guard-decision-id"]


def test_a_judged_write_leaves_private_and_keeps_no_store(cached_app: str, keys: Any) -> None:
    answer = httpx.put(f"{cached_app}/customers/c-1/contact", timeout=10, json={}, headers={
        "authorization": f"Bearer {keys.mint(sub='svc:crm')}", "x-purpose": PURPOSE})
    assert answer.status_code == 200, answer.text
    assert answer.headers.get_list("cache-control") == ["private, no-store, max-age=60"]
    assert "surrogate-control" not in answer.headers
    assert "cdn-cache-control" not in answer.headers


def test_a_public_answer_keeps_its_cache_headers(cached_app: str) -> None:
    first = httpx.get(f"{cached_app}/healthz", timeout=10)
    second = httpx.get(f"{cached_app}/healthz", timeout=10)
    assert first.status_code == second.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=600"
    assert second.headers["x-cache"] == "HIT"
