"""A write is judged whole, whatever mode its route names (twelfth review).

A ``minimise`` route is judged category by category, and its decision is allowed when
one personal category is released: the answer then loses the fields of the others.
That fits a read. On a write it let the handler (or the upstream) run with the whole
body: ``svc:auth``, granted ``write`` on ``identity.username`` but not on
``contact.email`` for ``business.administration``, changed a customer's email through a
``PUT`` declared ``write`` and ``minimise``; only the answer lost the email. Such a
declaration now stops the start (``@guarded``), and routes.csv refuses the row with its
line and column (so ``guard policy lint`` does too).

The same held for a route declared a read that takes a method changing what it names: a
``DELETE`` (or any method, ``*``, or a class endpoint taking every method) on a minimise
route ran for a caller released one category. A minimise route takes neither.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from sidecarkit import ServerThread, policy_copy, serve_sidecar, sidecar_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_red4_fields import served
from tokenkit import UvicornThread, guard_settings

from bench._pg import free_port
from guard._errors import PolicyError
from middleware import Category, GuardMiddleware, guarded
from middleware.routes import parse_routes

T = TypeVar("T")

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
CALLER, PURPOSE = "svc:auth", "business.administration"  # writes identity.username only
NEW = {"username": "ann", "email": "mallory@example.com"}
ROUTE = ("PUT, /accounts/{customer_id}, username=identity.username contact.email=contact.email"
         ", write, customer_id, minimise\n")


class Account(BaseModel):
    username: Annotated[str, Category("identity.username")]
    email: Annotated[str, Category("contact.email")]


def _service(settings: Any, written: list[Any]) -> FastAPI:
    app = FastAPI()

    @app.put("/accounts/{customer_id}", response_model=Account)
    @guarded(action="write", subject="customer_id", mode="minimise")
    async def put_account(customer_id: str, account: Account) -> Account:
        written.append(account.model_dump())
        return account

    app.add_middleware(GuardMiddleware, settings=settings)
    return app


def _started(start: Callable[[], T]) -> T | None:
    """What ``start`` made, or None when it refused the minimised write at start."""
    try:
        return start()
    except PolicyError as exc:
        refused = str(exc)
    assert "a minimise route is a read" in refused
    return None


def test_a_minimised_write_never_reaches_the_handler(tmp_path: Path, keys: Any) -> None:
    written: list[Any] = []
    app = _started(lambda: _service(guard_settings(tmp_path, keys), written))
    if app is None:  # refused where it is declared
        return
    with UvicornThread(app) as server:
        answer = httpx.put(server.url + "/accounts/c-1", json=NEW, timeout=10, headers={
            "authorization": f"Bearer {keys.mint(sub=CALLER)}", "x-purpose": PURPOSE})
    assert written == [], "the handler wrote the email of a caller refused contact.email"
    assert answer.status_code == 403, answer.text  # before: 200 {"username": "ann"}


@pytest.mark.parametrize("row", [
    ROUTE,
    ROUTE.replace("PUT", "*").replace("write", "read"),
    ROUTE.replace("PUT", "DELETE").replace("write", "read"),
    ROUTE.replace("write", "read"),
])
def test_routes_csv_refuses_a_minimised_write(row: str) -> None:
    with pytest.raises(PolicyError, match="minimise route is a read") as caught:
        parse_routes("# routes\n" + row)
    assert caught.value.line == 2
    assert caught.value.column == row.index("minimise") + 1


def test_a_minimised_read_is_kept() -> None:
    for method in ("GET", "POST"):  # POST: a question asked with a body
        parse_routes(ROUTE.replace("PUT", method).replace("write", "read"))


def test_a_minimised_route_taking_delete_never_runs_it(tmp_path: Path, keys: Any) -> None:
    deleted: list[str] = []
    app = FastAPI()

    @app.api_route("/accounts/{customer_id}", methods=["GET", "DELETE"],
                   response_model=Account)
    @guarded(subject="customer_id", mode="minimise")  # a read, by default
    async def account(customer_id: str, request: Request) -> Account:
        if request.method == "DELETE":
            deleted.append(customer_id)
        return Account(username="ann", email="ann@example.com")

    app.add_middleware(GuardMiddleware, settings=guard_settings(tmp_path, keys))
    answer = served(app, lambda base: httpx.delete(base + "/accounts/c-1", timeout=10, headers={
        "authorization": f"Bearer {keys.mint(sub=CALLER)}", "x-purpose": PURPOSE}))
    assert deleted == [], "a caller released identity.username alone deleted the account"
    assert answer is None, answer.text  # the start refused it; before: 200 {"username": "ann"}


def test_a_minimised_write_never_reaches_the_upstream(tmp_path: Path, keys: Any) -> None:
    written: list[Any] = []

    async def put_account(request: Request) -> JSONResponse:
        written.append(await request.json())
        return JSONResponse(written[-1])

    policy = policy_copy(tmp_path / "policy", SHIPPED)
    (policy / "routes.csv").write_text(ROUTE)
    upstream_app = Starlette(routes=[Route("/accounts/{customer_id}", put_account,
                                           methods=["PUT"])])
    with ServerThread(upstream_app, free_port()) as upstream:
        settings = sidecar_settings(tmp_path, policy, keys.identity(), upstream=upstream.url)
        sidecar = _started(lambda: serve_sidecar(settings))
        if sidecar is None:  # the routes file is refused at start
            return
        with sidecar:
            answer = httpx.put(sidecar.url + "/accounts/c-1", json=NEW, timeout=10, headers={
                "authorization": f"Bearer {keys.mint(sub=CALLER)}", "x-purpose": PURPOSE})
    assert written == [], "the upstream wrote the email of a caller refused contact.email"
    assert answer.status_code == 403, answer.text
