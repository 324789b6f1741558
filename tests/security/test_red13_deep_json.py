"""Thirteenth review: JSON nested past the parser's depth is a refusal, never a crash.

Python's ``json`` parser raises ``RecursionError`` (not ``ValueError``) for an array or
object nested some thousand levels deep, and orjson refuses past 1,024 levels. A minimised
answer nested that deep, and a ``/v1/decide`` body, went past every ``except ValueError``:
the middleware's app failed with a server error and a traceback in the log, where any body
that cannot be filtered is a 403 problem+json ``internal_error``; a verified caller's decide
body got a plain-text 500 where a malformed request is a 400 problem+json.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel
from sidecarkit import ServerThread, policy_copy, serve_sidecar, sidecar_settings
from tokenkit import guard_settings

from middleware import Category, GuardMiddleware, guarded
from tests.security.test_red4_fields import CALLER, PURPOSE, served

POLICIES = Path(__file__).resolve().parents[2] / "policies"
DEEP = b"[" * 5000 + b"]" * 5000


class Record(BaseModel):
    name: Annotated[str, Category("identity.name")]
    extra: Any = None


def test_a_minimised_answer_nested_too_deep_is_refused(tmp_path: Path, keys: Any) -> None:
    api = FastAPI()

    @api.get("/deep/{customer_id}", response_model=Record)
    @guarded(subject="customer_id", mode="minimise")
    async def deep(customer_id: str) -> Any:
        return Response(b'{"name":"Ann","extra":' + DEEP + b"}", media_type="application/json")

    app = GuardMiddleware(api, settings=guard_settings(tmp_path, keys))
    token = keys.mint("hs", sub=CALLER)
    answer = served(app, lambda url: httpx.get(f"{url}/deep/c-1", headers={
        "Authorization": f"Bearer {token}", "X-Purpose": PURPOSE}, timeout=30))
    assert answer is not None
    assert answer.status_code == 403, (answer.status_code, answer.text[:200])
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["reason"] == "internal_error"


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("deep-decide")
    with serve_sidecar(sidecar_settings(tmp, policy_copy(tmp / "policy", POLICIES),
                                        keys.identity())) as server:
        yield server


@pytest.mark.parametrize("path", ["/v1/decide", "/v1/subjects/lookup"])
def test_a_request_body_nested_too_deep_is_a_malformed_request(
        sidecar: ServerThread, keys: Any, path: str) -> None:
    token = keys.mint("hs", sub="svc:support")
    for body in (DEEP, b'{"purpose":' + DEEP + b"}"):
        answer = httpx.post(sidecar.url + path, content=body, timeout=10, headers={
            "authorization": f"Bearer {token}", "content-type": "application/json"})
        assert answer.status_code == 400, (answer.status_code, answer.text[:200])
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["reason"] == "malformed_request"
