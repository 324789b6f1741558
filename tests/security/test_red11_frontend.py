"""FastAPI's low-priority frontend routes never serve a request the guard did not judge.

FastAPI 0.163's ``app.frontend(path, directory=...)`` serves a static build as routes
tried after every route and the slash redirect, kept outside ``router.routes``. The guard
resolves through the router's routes, so a request only such a route would serve reaches
no endpoint there: it is refused (``route_not_declared``), never served unjudged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tokenkit import guard_settings

from middleware import GuardMiddleware, guarded
from tests.security.test_red4_fields import CALLER, PURPOSE, served


def test_a_frontend_file_is_refused_not_served(tmp_path: Path, keys: Any) -> None:
    build = tmp_path / "dist"
    build.mkdir()
    (build / "index.html").write_text("<p>the admin build</p>")
    api = FastAPI()
    if not hasattr(api, "frontend"):
        pytest.skip("this FastAPI has no frontend routes")

    @api.get("/records/{customer_id}")
    @guarded(subject="customer_id", categories=["identity.name"])
    async def record(customer_id: str) -> Any:
        return {"name": "Ann"}

    api.frontend("/", directory=str(build))
    plain = served(api, lambda base: httpx.get(base + "/index.html", timeout=10))
    assert plain is not None
    assert "admin build" in plain.text  # FastAPI itself serves it
    token = keys.mint(sub=CALLER)
    answers: list[httpx.Response] = []

    def ask(base: str) -> httpx.Response:
        for headers in ({}, {"authorization": f"Bearer {token}", "x-purpose": PURPOSE}):
            for target in ("/index.html", "/", "/records/c-1/x"):
                answers.append(httpx.get(base + target, headers=headers, timeout=10))
        return answers[0]

    served(GuardMiddleware(api, settings=guard_settings(tmp_path, keys)), ask)  # type: ignore[arg-type]
    assert len(answers) == 6
    for answer in answers:
        assert answer.status_code in (401, 403), (answer.url, answer.status_code)
        assert "admin build" not in answer.text
