"""Fourth review: a minimised answer says nothing about the fields it withholds.

A caller who may not receive ``contact.email`` must get the same answer whatever the
email is: the same status, body and headers. An upstream (or app) that sets an
``ETag`` computed over its whole body, answers ``If-None-Match`` with 304, honours
``Range`` with a slice of its body, or answers ``HEAD`` with the length of its whole
body (as Express, Rack and Django's conditional middleware do) must not turn the
minimised answer into an oracle for the withheld value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread, policy_copy, serve_sidecar, sidecar_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench._pg import free_port
from middleware import GuardMiddleware
from middleware.routes import RouteTable, parse_routes

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
ROUTES = (
    "GET, /customers/{customer_id}/record, customer_id=public name=identity.name "
    "contact.email=contact.email, "
    "read, customer_id, minimise\n"
)
EMAILS = ("ann@example.com", "a.much.longer.address@example.org")
CALLER, PURPOSE = "proc:payments", "order.processing.payments"  # identity.name, not contact
IGNORED = {"date", "x-guard-decision-id", "server"}


def body_of(email: str) -> bytes:
    """The upstream's whole record (compact JSON, as Express sends it)."""
    record = {"customer_id": "c-1", "name": "Ann", "contact": {"email": email}}
    return json.dumps(record, separators=(",", ":")).encode()


def etag_of(body: bytes) -> str:
    """A strong validator of the whole body (as Express, Rack::ETag and Django compute one)."""
    return '"' + hashlib.sha1(body).hexdigest() + '"'


def conditional_app(current: list[str]) -> Starlette:
    """An upstream that validates, answers conditionally and serves ranges of its body."""

    async def record(request: Request) -> Response:
        body = body_of(current[0])
        tag = etag_of(body)
        headers = {"etag": tag, "content-type": "application/json"}
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        wanted = request.headers.get("range", "")
        if wanted.startswith("bytes="):
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last), len(body) - 1)
            headers["content-range"] = f"bytes {start}-{end}/{len(body)}"
            return Response(body[start:end + 1], status_code=206, headers=headers)
        return Response(body, headers=headers)

    return Starlette(routes=[Route("/customers/{customer_id}/record", record)])


def requests_for(first: bytes) -> list[tuple[str, dict[str, str]]]:
    """What a client may send: plain, HEAD, a validator guessed from a full body, a range."""
    email = first.index(EMAILS[0].encode()) - 1  # the JSON string of the first email
    return [
        ("GET", {}),
        ("HEAD", {}),
        ("GET", {"if-none-match": etag_of(first)}),
        ("GET", {"range": f"bytes={email}-{email + len(EMAILS[0]) + 1}"}),
    ]


def answers(send: Callable[[str, dict[str, str]], httpx.Response], current: list[str]
            ) -> dict[str, list[tuple[int, dict[str, str], bytes]]]:
    """Each request's answer while the upstream holds each email."""
    out: dict[str, list[tuple[int, dict[str, str], bytes]]] = {}
    for email in EMAILS:
        current[0] = email
        for method, extra in requests_for(body_of(EMAILS[0])):
            answer = send(method, extra)
            assert email.encode() not in answer.content
            headers = {k: v for k, v in answer.headers.items() if k not in IGNORED}
            out.setdefault(f"{method} {sorted(extra)}", []).append(
                (answer.status_code, headers, answer.content))
    return out


def assert_same_whatever_the_email(found: dict[str, list[tuple[int, dict[str, str], bytes]]]
                                   ) -> None:
    for request, (first, second) in found.items():
        assert first == second, f"{request}: the answer depends on the withheld email"
        status, _headers, content = first
        if status == 200 and content:
            assert json.loads(content) == {"customer_id": "c-1", "name": "Ann", "contact": {}}


def test_a_minimised_answer_through_the_sidecar_is_the_same_whatever_the_withheld_value(
        tmp_path: Path, keys: Any) -> None:
    policy = policy_copy(tmp_path / "policy", SHIPPED, routes=ROUTES)
    current = [EMAILS[0]]
    with ServerThread(conditional_app(current), free_port()) as upstream:
        settings = sidecar_settings(tmp_path, policy, keys.identity(), upstream=upstream.url)
        with serve_sidecar(settings) as sidecar:
            token = keys.mint(sub=CALLER)

            def send(method: str, extra: dict[str, str]) -> httpx.Response:
                return httpx.request(method, sidecar.url + "/customers/c-1/record", timeout=10,
                                     headers={"authorization": f"Bearer {token}",
                                              "x-purpose": PURPOSE, **extra})

            found = answers(send, current)
    assert_same_whatever_the_email(found)


@pytest.mark.parametrize("planned", [False, True], ids=["first", "remembered"])
def test_a_minimised_answer_from_the_middleware_is_the_same_whatever_the_withheld_value(
        tmp_path: Path, keys: Any, planned: bool) -> None:
    policy = policy_copy(tmp_path / "policy", SHIPPED)
    settings = sidecar_settings(tmp_path, policy, keys.identity())
    current = [EMAILS[0]]
    app = conditional_app(current)
    app.add_middleware(GuardMiddleware, settings=settings, routes=RouteTable(parse_routes(ROUTES)))
    with ServerThread(app, free_port()) as server:
        token = keys.mint(sub=CALLER)

        def send(method: str, extra: dict[str, str]) -> httpx.Response:
            headers = {"authorization": f"Bearer {token}", "x-purpose": PURPOSE, **extra}
            url = server.url + "/customers/c-1/record"
            if planned:  # the per-route plan answers the second request
                httpx.request(method, url, timeout=10, headers=headers)
            return httpx.request(method, url, timeout=10, headers=headers)

        found = answers(send, current)
    assert_same_whatever_the_email(found)
