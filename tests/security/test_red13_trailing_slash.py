"""Thirteenth review: the sidecar never judges one route while a slash-blind upstream runs another.

routes.csv is matched as written, first row first; Express (``strict`` off, its default),
Rails, ASP.NET Core and Spring MVC before 6 route ``/customers/export/`` to the handler of
``/customers/export``. A path with a trailing slash matched no row but a later ``{name:path}``
one: with a public catch-all last (a single-page app's pages), ``/customers/c-0001/payment/``
went upstream as a public page, from a client with no token, unjudged and unrecorded, and
the upstream answered the payment card. A path that a row before the one it matches would
match without its trailing slash (or with one) is now refused (``route_not_declared``,
audited), as another case of a literal is (the eighth review).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import example, given
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
GET,  /customers/export,                   financial
GET,  /customers/{customer_id},            identity contact, read, customer_id
GET,  /customers/{customer_id}/payment,    financial,        read, customer_id
GET,  /files/{name:path},                  contact,          read
GET,  /{page:path},                        public
"""
PURPOSE = ("X-Purpose", "relationship.management")


class SlashBlindUpstream(WsgiThread):
    """A real HTTP upstream that routes as Express does by default (``strict`` off): one
    trailing slash is no part of the route; each handler run is kept in ``ran``."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        super().__init__()

    def app(self, environ: dict[str, Any], start: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        parts = path.split("/")
        if path == "/customers/export":
            handler = "export"
        elif len(parts) == 4 and parts[1] == "customers" and parts[3] == "payment":
            handler = "payment"
        elif len(parts) == 3 and parts[1] == "customers":
            handler = "customer"
        else:
            handler = "page"
        self.ran.append(handler)
        start("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"handler": handler}).encode()]


@contextlib.contextmanager
def _sidecar_before(upstream: SlashBlindUpstream, tmp: Path,
                    keys: Any) -> Iterator[tuple[ServerThread, SlashBlindUpstream, Path]]:
    """The sidecar with :data:`ROUTES` in front of ``upstream`` (each refusal audited), the
    upstream and the audit store's file."""
    policy = policy_copy(tmp / "policy", POLICIES, routes=ROUTES)
    with upstream:
        settings = sidecar_settings(tmp, policy, keys.identity(),
                                    upstream=f"http://127.0.0.1:{upstream.port}")
        settings.audit.anonymous_refusals_per_source = 0  # each refusal asserted
        with serve_sidecar(settings) as sidecar:
            yield sidecar, upstream, tmp / "audit.db"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory,
            keys: Any) -> Iterator[tuple[ServerThread, SlashBlindUpstream, Path]]:
    with _sidecar_before(SlashBlindUpstream(), tmp_path_factory.mktemp("slash"), keys) as made:
        yield made


def _get(sidecar: ServerThread, path: str, token: str | None = None) -> httpx.Response:
    headers = [PURPOSE] + ([("Authorization", f"Bearer {token}")] if token else [])
    return httpx.get(f"{sidecar.url}{path}", headers=headers, timeout=10)


def test_a_trailing_slash_never_runs_a_route_judged_as_another(
        proxied: tuple[ServerThread, SlashBlindUpstream, Path], keys: Any) -> None:
    sidecar, upstream, db = proxied
    token = keys.mint("hs", sub="svc:crm")  # identity and contact, not financial
    assert _get(sidecar, "/customers/c-0001/payment", token).status_code == 403
    for path in ("/customers/c-0001/payment/", "/customers/export/", "/customers/c-0001/"):
        before = list(upstream.ran)
        anonymous = _get(sidecar, path)
        assert upstream.ran == before, path  # nothing ran upstream
        assert anonymous.status_code == 401, (path, anonymous.text)
        answer = _get(sidecar, path, token)
        assert upstream.ran == before, path
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["reason"] == "route_not_declared"
    assert not {"payment", "export"} & set(upstream.ran)
    rows = poll(lambda: [r for r in audit_rows(db)
                         if r["reason"] == "route_not_declared"] or None)
    assert len(rows) >= 3


def test_paths_without_the_ambiguity_are_judged_as_before(
        proxied: tuple[ServerThread, SlashBlindUpstream, Path], keys: Any) -> None:
    sidecar, upstream, _db = proxied
    token = keys.mint("hs", sub="svc:crm")
    answer = _get(sidecar, "/customers/c-0001", token)
    assert answer.status_code == 200, answer.text
    assert upstream.ran[-1] == "customer"
    for page in ("/about", "/about/", "/", "/help/faq/"):
        assert _get(sidecar, page).status_code == 200, page
        assert upstream.ran[-1] == "page"
    assert _get(sidecar, "/files/a/b/", token).status_code == 200


_TABLE = RouteTable(parse_routes(ROUTES))
_SEGMENTS = st.sampled_from(["customers", "export", "c-0001", "payment", "files", "a", "about"])


@given(st.lists(_SEGMENTS, min_size=0, max_size=4), st.booleans())
@example(["customers", "export"], True)
@example(["files"], False)
def test_a_match_is_the_one_a_slash_blind_router_makes_or_none(
        segments: list[str], slash: bool) -> None:
    path = "/" + "/".join(segments) + ("/" if slash and segments else "")
    found = _TABLE.match("GET", path)
    if found is None:
        return
    bare = path[:-1] if len(path) > 1 and path.endswith("/") else path
    blind = next(r for r in _TABLE.rules
                 if RouteTable([r]).match("GET", bare) is not None
                 or RouteTable([r]).match("GET", bare + "/") is not None)
    assert blind is found.rule  # a slash-blind upstream picks the same row


class FormatBlindUpstream(SlashBlindUpstream):
    """Routes as Rails does by default: a trailing slash and a ``.format`` after the last
    segment are no part of the route (Spring MVC before 5.3 matched such suffixes too)."""

    def app(self, environ: dict[str, Any], start: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        head, _, last = path.rpartition("/")
        if "." in last[1:]:
            environ["PATH_INFO"] = head + "/" + last[:last.rindex(".")]
        return super().app(environ, start)


@pytest.fixture(scope="module")
def rails(tmp_path_factory: pytest.TempPathFactory,
          keys: Any) -> Iterator[tuple[ServerThread, SlashBlindUpstream, Path]]:
    with _sidecar_before(FormatBlindUpstream(), tmp_path_factory.mktemp("format"),
                         keys) as made:
        yield made


def test_a_format_suffix_never_runs_a_route_judged_as_another(
        rails: tuple[ServerThread, SlashBlindUpstream, Path], keys: Any) -> None:
    sidecar, upstream, _db = rails
    token = keys.mint("hs", sub="svc:crm")  # identity and contact, not financial
    for path in ("/customers/export.json", "/customers/export.csv/", "/customers/export."):
        before = list(upstream.ran)
        answer = _get(sidecar, path, token)
        assert upstream.ran == before, path  # the export never ran
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["reason"] == "route_not_declared"
    # a subject id with a dot is judged as before (the same row reads it either way)
    assert _get(sidecar, "/customers/ann@example.com", token).status_code == 200
    assert upstream.ran[-1] == "customer"


class SuffixBlindUpstream(SlashBlindUpstream):
    """Routes as Spring MVC before 5.3 does by default: ``/customers/export`` also takes
    ``/customers/export.*``, whatever follows the segment's first dot."""

    def app(self, environ: dict[str, Any], start: Any) -> Iterable[bytes]:
        head, _, last = environ["PATH_INFO"].rpartition("/")
        if "." in last[1:]:
            environ["PATH_INFO"] = head + "/" + last[:last.index(".", 1)]
        return super().app(environ, start)


def test_a_suffix_after_the_first_dot_never_runs_a_route_judged_as_another(
        tmp_path: Path, keys: Any) -> None:
    token = keys.mint("hs", sub="svc:crm")  # identity and contact, not financial
    with _sidecar_before(SuffixBlindUpstream(), tmp_path, keys) as (sidecar, upstream, _db):
        for path in ("/customers/export.tar.gz", "/customers/export..",
                     "/customers/c-0001/payment.v1.json"):
            answer = _get(sidecar, path, token)
            assert not {"export", "payment"} & set(upstream.ran), path
            assert answer.status_code == 403, (path, answer.text)
            assert answer.json()["reason"] == "route_not_declared"
        assert _get(sidecar, "/customers/c-0001.tar.gz", token).status_code == 200
        assert upstream.ran == ["customer"]


_DOTTED = st.sampled_from(["customers", "export", "export.json", "export.tar.gz", "export..",
                           "c-0001", "c-0001.xml", "payment", "payment.", "payment.v1.xml",
                           "files", "a.b", "about"])


@given(st.lists(_DOTTED, min_size=0, max_size=4), st.booleans())
@example(["customers", "export.json"], False)
@example(["customers", "c-0001", "payment."], True)
@example(["customers", "export.tar.gz"], False)
def test_a_match_is_the_one_a_format_blind_router_makes_or_none(
        segments: list[str], slash: bool) -> None:
    path = "/" + "/".join(segments) + ("/" if slash and segments else "")
    found = _TABLE.match("GET", path)
    if found is None:
        return
    bare = path[:-1] if len(path) > 1 and path.endswith("/") else path
    head, _, last = bare.rpartition("/")
    readings = {bare}
    if "." in last[1:]:  # a format from the last dot (Rails) or the first (Spring MVC)
        readings |= {head + "/" + last[:last.rindex(".")], head + "/" + last[:last.index(".", 1)]}
    for reading in readings:  # every row a router blind to either would pick
        blind = next(r for r in _TABLE.rules
                     if RouteTable([r]).match("GET", reading) is not None
                     or RouteTable([r]).match("GET", reading + "/") is not None)
        assert blind is found.rule, reading
