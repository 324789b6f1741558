"""Fifth review: through a real uvicorn, the guard judges the endpoint the app runs.

Request targets spelled every way a client can (``//``, dot segments, encoded
slashes and dots, ``;`` parameters, case, absolute form, a fragment, control
characters) and methods a route does not list (``HEAD`` on a FastAPI ``GET``
route, ``OPTIONS``, ``POST``, a lower-case method) are sent as raw bytes to a
FastAPI app with a shadowed public route, a public ``{path:path}`` route, an
included router and a mounted Starlette app. Without a token no guarded
endpoint ever runs; with one, every guarded endpoint that runs is the one the
guard judged (``tests/security/test_routes_subject.py`` holds the subject
to the value the handler receives).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tokenkit import UvicornThread, guard_settings

from middleware import GuardMiddleware, guarded, public
from tests.security.test_red4_fields import CALLER, PURPOSE

RAN: list[tuple[str, object, str]] = []  # (endpoint that ran, endpoint judged, its subject)


def _ran(request: Request, name: str, subject: str) -> None:
    outcome = request.scope.get("state", {}).get("guard")
    RAN.append((name, getattr(outcome, "endpoint", None), subject))


def build(settings: Any) -> tuple[FastAPI, dict[str, object]]:
    app = FastAPI()

    @app.get("/customers/{customer_id}")
    @guarded(subject="customer_id", categories=["identity.name"])
    async def card(request: Request, customer_id: str) -> str:
        _ran(request, "card", customer_id)
        return customer_id

    @app.get("/customers/me")  # shadowed by the route above, as Starlette dispatches
    @public()
    async def me(request: Request) -> str:
        _ran(request, "me", "")
        return "me"

    @app.get("/files/{name:path}")
    @public()
    async def files(request: Request, name: str) -> str:
        _ran(request, "files", name)
        return name

    v2 = APIRouter(prefix="/v2")

    @v2.get("/customers/{customer_id}")
    @guarded(subject="customer_id", categories=["identity.name"])
    async def card2(request: Request, customer_id: str) -> str:
        _ran(request, "card2", customer_id)
        return customer_id

    app.include_router(v2)

    @guarded(subject="cid", categories=["identity.name"])
    async def legacy(request: Request) -> PlainTextResponse:
        _ran(request, "legacy", request.path_params["cid"])
        return PlainTextResponse("legacy")

    sub = Starlette(routes=[Route("/customers/{cid}", legacy)])
    app.mount("/legacy", sub)
    app.add_middleware(GuardMiddleware, settings=settings)
    return app, {"card": card, "card2": card2, "legacy": legacy}


TARGETS = [
    "/customers/c-1", "//customers/c-1", "/customers//c-1", "/customers/c-1/",
    "/customers/./c-1", "/x/../customers/c-1", "/customers/c-1%2F", "/customers%2Fc-1",
    "/customers/c-1;x", "/Customers/c-1", "/customers/c%2D1", "/%63ustomers/c-1",
    "/customers/me", "/customers/me/../c-1", "/files/../customers/c-1",
    "/files/..%2Fcustomers/c-1", "/files/%2e%2e/customers/c-1", "/v2/customers/c-1",
    "/v2//customers/c-1", "/v2/customers/c-1/", "/V2/customers/c-1", "/legacy/customers/c-1",
    "/legacy//customers/c-1", "/legacy/customers/c-1/", "/legacy%2Fcustomers/c-1",
    "/legacy/customers/c-1%2F..", "http://x/customers/c-1", "http://x//customers/c-1",
    "/customers/c-1?customer_id=c-2", "/customers/c-1#/../me", "/customers/c-1%00",
    "/customers/%20c-1", "*",
]
METHODS = ["GET", "HEAD", "OPTIONS", "POST", "get"]


def send(port: int, method: str, target: str, headers: str = "") -> bytes:
    """One raw request on its own connection; the status line of the answer."""
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_no_spelling_of_a_target_runs_an_endpoint_the_guard_did_not_judge(
        tmp_path: Path, keys: Any) -> None:
    app, endpoints = build(guard_settings(tmp_path, keys))
    token = keys.mint(sub=CALLER)
    with UvicornThread(app) as server:
        for method in METHODS:
            for target in TARGETS:
                RAN.clear()
                status = send(server.port, method, target)
                unjudged = [name for name, _, _ in RAN if name not in ("me", "files")]
                assert not unjudged, (method, target, status, RAN)

                RAN.clear()
                status = send(server.port, method, target,
                              f"Authorization: Bearer {token}\r\nX-Purpose: {PURPOSE}\r\n")
                for name, judged, _subject in RAN:
                    if name not in ("me", "files"):
                        assert judged is endpoints[name], (method, target, status, RAN)
        RAN.clear()
        assert send(server.port, "GET", "/customers/c-1", f"Authorization: Bearer {token}\r\n"
                    f"X-Purpose: {PURPOSE}\r\n") == b"HTTP/1.1 200 OK"
        ran = list(RAN)
        assert ran == [("card", endpoints["card"], "c-1")]
