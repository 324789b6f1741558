"""The sidecar never judges one route while a case-insensitive upstream runs another.

routes.csv is matched case by case, first row first; Express and ASP.NET Core route
without regard to case by default. With ``GET /customers/export`` (financial) listed
before ``GET /customers/{customer_id}`` (identity, contact), a caller allowed the
second sent ``/customers/EXPORT``: the guard judged (and allowed, and recorded) a read
of the subject ``EXPORT``, and the upstream ran the export. A path that a row before
the matching one would match in another ASCII case is now refused
(``route_not_declared``, audited).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sidecarkit import (
    ServerThread,
    WsgiThread,
    audit_rows,
    policy_copy,
    poll,
    serve_sidecar,
    sidecar_settings,
)

from middleware.routes import RouteTable, parse_routes

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ROUTES = """\
GET,  /customers/export,           financial
GET,  /customers/{customer_id},    identity contact, read, customer_id
GET,  /pages/{name},               public
"""
PURPOSE = ("X-Purpose", "relationship.management")


class CaseBlindUpstream(WsgiThread):
    """A real HTTP upstream that routes as Express does by default: case-insensitively,
    literal routes first; each handler run is kept in ``ran``."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        super().__init__()

    def app(self, environ: dict[str, Any], start: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"].lower()
        handler = "export" if path == "/customers/export" else "customer"
        self.ran.append(handler)
        start("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"handler": handler}).encode()]


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory,
            keys: Any) -> Iterator[tuple[ServerThread, CaseBlindUpstream, Path]]:
    tmp = tmp_path_factory.mktemp("case")
    policy = policy_copy(tmp / "policy", POLICIES, routes=ROUTES)
    with CaseBlindUpstream() as upstream:
        settings = sidecar_settings(tmp, policy, keys.identity(),
                                    upstream=f"http://127.0.0.1:{upstream.port}")
        served = serve_sidecar(settings)
        served.server.config.proxy_headers = False
        with served as sidecar:
            yield sidecar, upstream, tmp / "audit.db"


def _get(sidecar: ServerThread, keys: Any, path: str) -> httpx.Response:
    token = keys.mint("hs", sub="svc:crm")
    return httpx.get(f"{sidecar.url}{path}", headers=[
        ("Authorization", f"Bearer {token}"), PURPOSE], timeout=10)


def test_another_case_of_a_literal_route_never_runs_it_judged_as_another(
        proxied: tuple[ServerThread, CaseBlindUpstream, Path], keys: Any) -> None:
    sidecar, upstream, db = proxied
    assert _get(sidecar, keys, "/customers/export").status_code == 403  # not financial
    assert _get(sidecar, keys, "/customers/c-0001").status_code == 200  # identity, contact
    for spelled in ("/customers/EXPORT", "/customers/Export", "/customers/exPort"):
        before = list(upstream.ran)
        answer = _get(sidecar, keys, spelled)
        assert upstream.ran == before, spelled  # nothing ran upstream
        assert answer.status_code == 403, (spelled, answer.text)
        assert answer.json()["reason"] == "route_not_declared"
    assert "export" not in upstream.ran
    rows = poll(lambda: [r for r in audit_rows(db)
                         if r["reason"] == "route_not_declared"] or None)
    assert len(rows) >= 3


def test_a_subject_in_capitals_is_still_judged(
        proxied: tuple[ServerThread, CaseBlindUpstream, Path], keys: Any) -> None:
    sidecar, upstream, _db = proxied
    answer = _get(sidecar, keys, "/customers/C-0001")
    assert answer.status_code == 200, answer.text
    assert upstream.ran[-1] == "customer"
    assert httpx.get(f"{sidecar.url}/pages/About", timeout=10).status_code == 200


_TABLE = RouteTable(parse_routes(ROUTES))


_PATHS = st.sampled_from(["/customers/export", "/customers/c-0001", "/pages/export",
                          "/customers/export/x", "/customers/", "/pages/customers"])


@st.composite
def _spellings(draw: st.DrawFn) -> str:
    path = draw(_PATHS)  # one segment spelled in another case (the rest as routes.csv has it)
    segments = path.split("/")
    at = draw(st.integers(1, len(segments) - 1))
    flips = draw(st.lists(st.booleans(), min_size=len(segments[at]),
                          max_size=len(segments[at])))
    segments[at] = "".join(c.upper() if up else c
                           for c, up in zip(segments[at], flips, strict=True))
    return "/".join(segments)


@given(_spellings())
def test_a_match_is_the_one_a_case_blind_router_makes_or_none(path: str) -> None:
    found = _TABLE.match("GET", path)
    if found is None:
        return
    blind = next(r for r in _TABLE.rules
                 if RouteTable([r]).match("GET", path.lower()) is not None)
    assert blind is found.rule  # a case-blind upstream picks the same row
