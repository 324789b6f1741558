"""Routes: routes.csv parsing with precise errors, matching, code declarations."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from guard._errors import PolicyError
from guard._types import Action
from middleware.routes import (
    RouteRule,
    RouteTable,
    guarded,
    parse_routes,
    public,
    rules_from_app,
)

SAMPLE = """\
# method, path template, categories, action, subject
GET,  /customers/stats,                  aggregated
GET,  /customers/{customer_id},          identity contact, read, customer_id
PUT,  /customers/{customer_id}/contact,  contact,          write, customer_id
*,    /files/{rest:path},                technical
GET,  /orders/{order_id:int},            transaction
GET,  /healthz,                          public
"""


def table(text: str = SAMPLE) -> RouteTable:
    return RouteTable(parse_routes(text))


def test_parse_sample() -> None:
    rules = parse_routes(SAMPLE)
    assert rules[1] == RouteRule("GET", "/customers/{customer_id}", ("identity", "contact"),
                                 Action.READ, "customer_id", False)
    assert rules[2].action is Action.WRITE
    assert rules[0].subject is None
    assert rules[-1].public
    assert rules[-1].categories == ()


@pytest.mark.parametrize(
    ("method", "path", "template", "params"),
    [
        ("GET", "/customers/c-1", "/customers/{customer_id}", {"customer_id": "c-1"}),
        ("HEAD", "/customers/c-1", "/customers/{customer_id}", {"customer_id": "c-1"}),
        ("get", "/customers/stats", "/customers/stats", {}),
        ("PUT", "/customers/c-2/contact", "/customers/{customer_id}/contact",
         {"customer_id": "c-2"}),
        ("DELETE", "/files/a/b/c.txt", "/files/{rest:path}", {"rest": "a/b/c.txt"}),
        ("GET", "/orders/42", "/orders/{order_id:int}", {"order_id": "42"}),
        ("POST", "/healthz", None, None),
        ("GET", "/healthz", "/healthz", {}),
    ],
)
def test_match(method: str, path: str, template: str | None,
               params: dict[str, str] | None) -> None:
    found = table().match(method, path)
    if template is None:
        assert found is None
    else:
        assert found is not None
        assert found.rule.template == template
        assert found.params == params


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/customers/c-1"), ("GET", "/customers/c-1/other"), ("GET", "/orders/x1"),
     ("GET", "/customers/"), ("GET", "/nothing"), ("GET", "/customers/a/contact")],
)
def test_no_match_means_undeclared(method: str, path: str) -> None:
    assert table().match(method, path) is None


def test_first_row_in_file_order_wins() -> None:
    found = table().match("GET", "/customers/stats")
    assert found is not None
    assert found.rule.categories == ("aggregated",)
    later = table("GET, /a/{x}, identity\nPOST, /a/me, public\n")
    found = later.match("GET", "/a/me")
    assert found is not None
    assert found.rule.template == "/a/{x}"
    found = later.match("POST", "/a/me")
    assert found is not None
    assert found.rule.public


def test_head_takes_the_first_get_or_head_row() -> None:
    t = table("HEAD, /a/{x}, public\nGET, /a/{x}, identity\n")
    found = t.match("HEAD", "/a/1")
    assert found is not None
    assert found.rule.public
    found = t.match("GET", "/a/1")
    assert found is not None
    assert found.rule.categories == ("identity",)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ("GET, /a/{x}", "GET, /a/me"),
        ("GET, /a/{x}", "GET, /a/{y:int}"),
        ("GET, /a/{x}", "HEAD, /a/{y}"),
        ("*, /a/{x}", "PUT, /a/b"),
        ("GET, /a/{x:float}", "GET, /a/{y:int}"),
        ("GET, /a/{x:int}", "GET, /a/007"),
        ("GET, /a/{x:uuid}", "GET, /a/123e4567-e89b-12d3-a456-426614174000"),
        ("GET, /files/{rest:path}", "GET, /files/{a}/{b}"),
        ("GET, /files/{rest:path}", "GET, /files/"),
        ("GET, /files/{rest:path}", "GET, /files/x/{more:path}"),
        ("GET, /{a}/{b}", "GET, /x/{c:int}"),
        ("GET, /a/{x}.json", "GET, /a/{y}.json"),
    ],
)
def test_a_row_that_can_never_match_is_refused(earlier: str, later: str) -> None:
    text = f"# routes\n{earlier}, identity\n{later}, contact\n"
    with pytest.raises(PolicyError) as info:
        parse_routes(text, "routes.csv")
    assert info.value.line == 3
    assert info.value.column == later.index(",") + 3
    assert "can never match: line 2" in info.value.message


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ("GET, /a/me", "GET, /a/{x}"),
        ("GET, /a/{x}", "POST, /a/me"),
        ("GET, /a/{x}", "*, /a/me"),
        ("HEAD, /a/{x}", "GET, /a/{x}"),
        ("GET, /a/{x:int}", "GET, /a/{y}"),
        ("GET, /a/{x:int}", "GET, /a/{y:float}"),
        ("GET, /a/{x}", "GET, /a/"),
        ("GET, /a/{x}", "GET, /a/{x}/b"),
        ("GET, /files/{rest:path}", "GET, /files"),
        ("GET, /files/{rest:path}", "GET, /filesx/{a}"),
        ("GET, /a/{x}.json", "GET, /a/{y}"),
        ("GET, /a/{x}", "GET, /a/{rest:path}"),
        ("GET, /a/{x:uuid}", "GET, /a/not-a-uuid"),
    ],
)
def test_a_row_an_earlier_row_does_not_cover_is_kept(earlier: str, later: str) -> None:
    assert len(parse_routes(f"{earlier}, identity\n{later}, contact\n")) == 2


@pytest.mark.parametrize(
    ("text", "line", "column", "needle"),
    [
        ("GET, /a\n", 1, 8, "expected"),
        ("# c\n\nFETCH, /a, identity\n", 3, 1, "unknown HTTP method"),
        ("GET, a/b, identity\n", 1, 6, "path template"),
        ("GET, /a/{x, identity\n", 1, 6, "path template"),
        ("GET, /a/{x:bogus}, identity\n", 1, 6, "unknown parameter type"),
        ("GET, /a, Identity\n", 1, 10, "not a category key"),
        ("GET, /a,  \n", 1, 11, "no categories"),
        ("GET, /a, identity, peek\n", 1, 20, "read or write"),
        ("GET, /a/{id}, identity, read, customer\n", 1, 31, "subject parameter"),
        ("GET, /a, public, read\n", 1, 18, "public route"),
        ("GET, /a, identity\nGET, /a, contact\n", 2, 1, "already declared on line 1"),
        ("GET, /a, identity, read, , deny, extra\n", 1, 34, "too many fields"),
        ("GET, /a, identity, read, , extra\n", 1, 28, "mode must be deny or minimise"),
        ("GET, /a, identity, read, , minimise\n", 1, 10, "maps JSON field paths"),
        ("GET, /a, a.b=identity a.b.c=contact, read\n", 1, 10, "under a categorised field"),
    ],
)
def test_bad_rows_name_line_and_column(text: str, line: int, column: int, needle: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_routes(text, "routes.csv")
    assert info.value.line == line
    assert info.value.column == column
    assert needle in info.value.message
    assert str(info.value).startswith(f"routes.csv:{line}:{column}: ")


def test_from_csv_reads_the_shipped_routes(policy_dir: Path) -> None:
    shipped = RouteTable.from_csv(policy_dir / "routes.csv")
    assert len(shipped) > 5
    found = shipped.match("GET", "/customers/c-0001")
    assert found is not None
    assert found.rule.subject == "customer_id"


def test_from_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read routes"):
        RouteTable.from_csv(tmp_path / "nope.csv")


def test_guarded_declarations_on_fastapi_either_order() -> None:
    app = FastAPI()

    @app.get("/customers/{customer_id}")
    @guarded(categories=["identity"], subject="customer_id")
    async def below(customer_id: str) -> dict[str, str]:
        return {}

    @guarded(categories=["contact"], action="write", subject="customer_id")
    @app.put("/customers/{customer_id}/contact")
    async def above(customer_id: str) -> dict[str, str]:
        return {}

    @app.get("/healthz")
    @public()
    async def health() -> dict[str, str]:
        return {}

    @app.get("/undeclared")
    async def undeclared() -> dict[str, str]:
        return {}

    rules = {(r.method, r.template): r for r in rules_from_app(app)}
    assert rules[("GET", "/customers/{customer_id}")].categories == ("identity",)
    assert rules[("PUT", "/customers/{customer_id}/contact")].action is Action.WRITE
    assert rules[("GET", "/healthz")].public
    assert not any(t == "/undeclared" for _, t in rules)


def test_guarded_declarations_inside_starlette_mounts() -> None:
    @guarded(categories=["usage"])
    async def usage(request: object) -> PlainTextResponse:
        return PlainTextResponse("")

    app = Starlette(routes=[Mount("/api/", routes=[Route("/usage/{day}", usage)])])
    rules = rules_from_app(app)
    assert [(r.method, r.template) for r in rules] == [("GET", "/api/usage/{day}")]


def test_guarded_rejects_bad_declarations() -> None:
    with pytest.raises(PolicyError):
        guarded(categories=[])
    with pytest.raises(PolicyError):
        guarded(categories="identity")
    with pytest.raises(PolicyError):
        guarded(categories=["Identity!"])
    with pytest.raises(PolicyError):
        guarded(categories=["identity"], action="delete")
    app = FastAPI()

    @app.get("/a/{x}")
    @guarded(categories=["identity"], subject="y")
    async def handler(x: str) -> None:
        return None

    with pytest.raises(PolicyError, match="subject 'y'"):
        rules_from_app(app)


_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~%", min_size=1,
                   max_size=12).filter(lambda s: s not in {".", ".."})


@given(_segment, _segment)
def test_params_round_trip(customer: str, tail: str) -> None:
    t = table()
    found = t.match("PUT", f"/customers/{customer}/contact")
    assert found is not None
    assert found.params == {"customer_id": customer}
    found = t.match("GET", f"/files/{customer}/{tail}")
    assert found is not None
    assert found.params == {"rest": f"{customer}/{tail}"}
    assert t.match("GET", f"/customers/{customer}/{tail}") is None
