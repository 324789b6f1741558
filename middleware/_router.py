"""The endpoint a Starlette or FastAPI app will call for a request, found as its router finds it.

The guard must judge the endpoint that will run, not one it guesses from the
path: :class:`AppRoutes` asks the app's own routes (``route.matches(scope)``)
in the router's order, a FULL match first and the first PARTIAL (wrong
method) match otherwise, as ``starlette.routing.Router`` does, and goes on into
``Mount``, ``Host`` and FastAPI's included routers. The endpoint's declaration
comes from ``@guarded``/``@public`` on it, else from the routes.csv row with
its method and full template, else from the public paths. Matching works on a
copy of the scope; the request's own scope is never changed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Host, Match, Mount, Router
from starlette.types import Scope

from guard._types import Action
from middleware.routes import (
    DECLARATION_ATTR,
    Declaration,
    RouteRule,
    RouteTable,
    declared_rules,
)

__all__ = ["AppRoutes", "Resolved", "find_router"]

_log = logging.getLogger("guard.middleware")
_MAX_DEPTH = 32
_STR_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):str\}")


@dataclass(frozen=True, slots=True)
class Resolved:
    """The endpoint the app will call and what it declares.

    Args:
        endpoint: The endpoint (function, class or mounted app); None when no
            route matches (the app answers 404 or a slash redirect).
        rule: The declaration for the request's method; None when there is none.
        subject: The subject parameter's value as the handler receives it (``str()``
            of the converted value), when the rule names one and it matched.
    """

    endpoint: object | None
    rule: RouteRule | None
    subject: str | None = None


NOWHERE = Resolved(None, None)


@dataclass(frozen=True, slots=True)
class _Leaf:
    """One endpoint: the route that calls it, its full template and its rules by method."""

    route: object
    endpoint: object | None
    template: str
    rules: Mapping[str, RouteRule]

    def rule_for(self, method: str) -> RouteRule | None:
        rules = self.rules
        rule = rules.get(method)
        if rule is None and method == "HEAD":
            rule = rules.get("GET")
        return rule if rule is not None else rules.get("*")


def find_router(app: object) -> Router | None:
    """The router behind ``app``, following ``.app`` through middleware layers; None if none."""
    for _ in range(_MAX_DEPTH):
        if app is None:
            return None
        router = _router_of(app)
        if router is not None:
            return router
        app = getattr(app, "app", None)
    return None


def _router_of(app: object) -> Router | None:
    if isinstance(app, Router):
        return app
    if isinstance(app, Starlette):
        return app.router
    return None


class AppRoutes:
    """Resolve requests through an app's router to the endpoint and its declaration.

    Args:
        router: The app's router (see :func:`find_router`).
        table: routes.csv rows; a row declares the endpoint with its method and template.
        public: Templates that need no decision, any method.
    """

    __slots__ = ("_csv", "_leaves", "_public", "_router")

    def __init__(self, router: Router, table: RouteTable, public: Iterable[str]) -> None:
        self._router = router
        self._csv: dict[str, dict[str, RouteRule]] = {}
        for rule in table.rules:
            self._csv.setdefault(_same(rule.template), {}).setdefault(rule.method, rule)
        self._public = frozenset(_same(p) for p in public)
        self._leaves: dict[tuple[int, str], _Leaf] = {}
        self._walk(router.routes, "")

    def _walk(self, routes: Sequence[BaseRoute], prefix: str, depth: int = 0) -> None:
        """Read every declaration once (and refuse a bad one now, not at its first request)."""
        if depth > _MAX_DEPTH:
            return
        for route in routes:
            inner = _inner_router(route)
            if inner is not None:
                self._walk(inner.routes, prefix + _mount_path(route), depth + 1)
            elif _included(route) is None:
                self._leaf(route, None, prefix, None)

    def resolve(self, scope: Scope) -> Resolved:
        """The endpoint the app will call for ``scope``, and its declaration; scope is unchanged."""
        method: str = scope["method"] if scope["type"] == "http" else "GET"
        work = dict(scope)
        nested = work.get("fastapi")
        if isinstance(nested, dict):
            work["fastapi"] = dict(nested)
        routes: Sequence[BaseRoute] = self._router.routes
        prefix = ""
        for _ in range(_MAX_DEPTH):
            route, child = _pick(routes, work)
            if route is None:
                return NOWHERE
            work.update(child)
            context: Any = None
            included = _included(route)
            while included is not None:  # FastAPI include_router, as its own handle goes
                found, child, route, context = included(work)
                if found is Match.NONE or route is None:
                    return NOWHERE
                work.update(child)
                included = _included(route)
            inner = _inner_router(route)
            if inner is not None:
                routes = inner.routes
                prefix += _mount_path(route)
                continue
            leaf = self._leaf(route, context, prefix, work.get("endpoint"))
            rule = leaf.rule_for(method)
            subject = None
            if rule is not None and rule.subject is not None:
                params = work.get("path_params") or {}
                if rule.subject in params:
                    subject = str(params[rule.subject])
            return Resolved(leaf.endpoint, rule, subject)
        return NOWHERE

    def _leaf(self, route: object, context: Any, prefix: str, endpoint: object) -> _Leaf:
        """The cached endpoint record for ``route`` under ``prefix``."""
        template = prefix + _template(route, context)
        key = (id(route), template)
        leaf = self._leaves.get(key)
        if leaf is not None and leaf.route is route:
            return leaf
        leaf = self._build(route, template, endpoint)
        self._leaves[key] = leaf
        return leaf

    def _build(self, route: object, template: str, endpoint: object) -> _Leaf:
        if isinstance(route, Mount | Host):  # a mounted app: declared on the app itself
            endpoint = getattr(route, "_base_app", None) or route.app
        elif endpoint is None:
            endpoint = getattr(route, "endpoint", None)
        rules: dict[str, RouteRule] = {}
        if _same(template) in self._public:
            rules["*"] = RouteRule("*", template, (), Action.READ, None, True)
        rules.update(self._csv.get(_same(template), {}))
        declaration = getattr(endpoint, DECLARATION_ATTR, None)
        if isinstance(declaration, Declaration):
            methods = getattr(route, "methods", None) or ["*"]
            for rule in declared_rules(declaration, route, template, methods):
                rules[rule.method] = rule
        return _Leaf(route, endpoint, template, rules)


def _pick(routes: Sequence[BaseRoute], scope: Scope) -> tuple[BaseRoute | None, Scope]:
    """The route the router hands ``scope`` to: the first FULL match, else the first PARTIAL."""
    partial: tuple[BaseRoute, Scope] | None = None
    for route in routes:
        found, child = route.matches(scope)
        if found is Match.FULL:
            return route, child
        if found is Match.PARTIAL and partial is None:
            partial = (route, child)
    if partial is not None:
        return partial
    return None, {}


def _inner_router(route: object) -> Router | None:
    """The router a Mount or Host hands on to (its app's), None for any other route."""
    if isinstance(route, Mount):
        return _router_of(getattr(route, "_base_app", None) or route.app)
    if isinstance(route, Host):
        return _router_of(route.app)
    return None


def _mount_path(route: object) -> str:
    return route.path if isinstance(route, Mount) else ""


def _included(route: object) -> Any:
    """FastAPI's included router (``include_router``): its own matcher, None for other routes."""
    if type(route).__name__ == "_IncludedRouter" and hasattr(route, "original_router"):
        return getattr(route, "_match", None)
    return None


def _template(route: object, context: Any) -> str:
    """The path template of an endpoint's route (below any mount prefix)."""
    if context is not None:
        path = getattr(context, "path_format", None) or getattr(context, "path", None)
        if isinstance(path, str) and path:
            return path
    if isinstance(route, Mount):
        return route.path + "/{path:path}"
    if isinstance(route, Host):
        return "/{path:path}"
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else ""


def _same(template: str) -> str:
    """A template with ``{x:str}`` written ``{x}``, so both spellings name one route."""
    return _STR_PARAM.sub(r"{\1}", template)

