"""The endpoint a Starlette or FastAPI app will call for a request, found as its router finds it.

The guard must judge the endpoint that will run, not one it guesses from the
path: :class:`AppRoutes` asks the app's own routes (``route.matches(scope)``)
in the router's order, a FULL match first and the first PARTIAL (wrong
method) match otherwise, as ``starlette.routing.Router`` does, and goes on into
``Mount``, ``Host`` and FastAPI's included routers. The endpoint's declaration
comes from ``@guarded``/``@public`` on it, else from the routes.csv row with
its method and full template, else from the public paths. Matching works on a
copy of the scope; the request's own scope is never changed.

``matches`` is asked only of the routes that could match the path (:class:`_Index`):
a route whose template Starlette compiled as written is filed under its literal
first segment, and, when no parameter can span a ``/``, its segment count and
literal last segment; every other route (a ``Host``, an included router, a
route class of the app's own) is asked for every path. The candidates keep
the router's order, so the first FULL match and the first PARTIAL one are the
router's own.

The answer itself is remembered (:data:`ANSWERS` of them, at most, for paths of
at most :data:`CACHED_PATH` characters) when it can only depend on what the
key holds: the scope's type, method, ``root_path`` and ``path``. That is when
the request's scope carries nothing else a route reads (no ``path_params``, no
FastAPI state), the answer is a route of the app's own router (not inside a
``Mount``, a ``Host`` or an included router), and every route of that router
matches by Starlette's or FastAPI's own ``matches`` with Starlette's own
convertors (no ``Host``, no route class or convertor of the app's own, which
could read anything). A remembered answer is given only while that router's
``routes`` is the same list holding the same routes; a change to it (a route
added, removed or replaced at run time) makes every answer be found afresh.

A path with no remembered answer (a new data subject's id in it, usually) is matched
by :meth:`AppRoutes.quick` when its answer may be remembered and every route of the
app's router is one whose ``matches`` comes down to its compiled pattern and methods:
the candidates' ``path_regex`` and ``methods`` are read as their ``matches`` reads
them, in the router's order, and only the subject's parameter is converted; anything
else (a ``Mount`` that matches, a route of another kind) is resolved through the
routes' own ``matches``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette._utils import get_route_path  # what Route.matches itself calls
from starlette.applications import Starlette
from starlette.convertors import (
    FloatConvertor,
    IntegerConvertor,
    PathConvertor,
    StringConvertor,
    UUIDConvertor,
)
from starlette.routing import (
    BaseRoute,
    Host,
    Match,
    Mount,
    Route,
    Router,
    WebSocketRoute,
    compile_path,
)
from starlette.types import Scope

from guard._types import Action, quick_init
from middleware._bounds import MAX_METHOD
from middleware.routes import (
    DECLARATION_ATTR,
    Declaration,
    RouteRule,
    RouteTable,
    declared_rules,
)

__all__ = ["Answer", "AppRoutes", "Resolved", "Shape", "find_router"]

_log = logging.getLogger("guard.middleware")
_MAX_DEPTH = 32
_STR_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):str\}")
_SLASH_FREE = (StringConvertor, IntegerConvertor, FloatConvertor, UUIDConvertor)
"""Convertors whose values never hold a ``/``: a template made of them has a fixed segment count."""
_ROUTE, _SOCKET, _MOUNT = 1, 2, 3
_PLAIN: dict[object, int] = {Route.matches: _ROUTE, WebSocketRoute.matches: _SOCKET,
                             Mount.matches: _MOUNT}
"""The ``matches`` that read only the scope's type, path, root_path and method (and
``path_params``, which an answer's key rules out), by what they match: a ``Route``'s
(``http``, its methods), a ``WebSocketRoute``'s (``websocket``), a ``Mount``'s (both)."""
try:  # FastAPI's routes add the route to the child scope, and read an included router's context
    from fastapi.routing import APIRoute, APIWebSocketRoute

    _PLAIN[APIRoute.matches] = _ROUTE  # Starlette's, unless the scope names an effective route
    _PLAIN[APIWebSocketRoute.matches] = _SOCKET
except ImportError:  # pragma: no cover - FastAPI is optional for a Starlette app
    pass
_EFFECTIVE_CONTEXT = "effective_route_context"  # FastAPI: scope["fastapi"][...]
_ANY = object()  # a request segment no indexed route names
_CACHE = 4096
_OWN_CONVERTORS = (*_SLASH_FREE, PathConvertor)
"""Starlette's own convertors (an app's own may convert with side effects, or read state)."""
ANSWERS = 4096
"""Answers remembered per app (then forgotten all at once: bounded whatever the paths)."""
CACHED_PATH = 256
"""The longest path (characters) whose answer is remembered."""


@quick_init
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


class Answer:
    """A remembered answer: the endpoint and declaration, and where they were found.

    Args:
        resolved: The answer.
        routes: The router's routes list it was found in.
        index: That list's index when it was found (the answer holds while the list
            holds what the index held).
    """

    __slots__ = ("_resolved", "fits", "held", "plan", "routes", "shape", "subject")

    def __init__(self, resolved: Resolved | None, routes: list[BaseRoute], index: _Index,
                 shape: Shape | None = None, subject: str | None = None) -> None:
        self._resolved = resolved
        self.subject = resolved.subject if resolved is not None else subject
        """The subject's id (:attr:`Resolved.subject`)."""
        self.routes = routes
        self.shape = shape
        """What the answer shares with every path matched to its route (:meth:`AppRoutes.quick`;
        None for an answer found through the routes' ``matches``). An answer with a shape
        and no ``resolved`` makes its :class:`Resolved` when it is first asked for."""
        self.fits: bool | None = None
        """Whether an enforcement point found the answer's subject fit to be audited (None: not
        asked yet)."""
        self.held = index.held
        """What ``routes`` held when the answer was found (the answer holds while it still
        does; the index's own list, shared by every answer found through it)."""
        self.plan: Any = None
        """What an enforcement point computed from the answer, or its shape's (its own, or
        None)."""

    @property
    def resolved(self) -> Resolved:
        """The answer."""
        found = self._resolved
        if found is None:
            shape: Any = self.shape
            found = self._resolved = Resolved(shape.endpoint, shape.rule, self.subject)
        return found


class Shape:
    """What every path :meth:`AppRoutes.quick` matches to one route shares, for one method.

    Args:
        route: The route.
        endpoint: The endpoint it calls.
        rule: The declaration for the method; None when there is none.
        name: The subject's parameter, when the rule names one the route has.
        convertor: That parameter's convertor (None when there is none).
    """

    __slots__ = ("convertor", "endpoint", "name", "plan", "route", "rule")

    def __init__(self, route: Any, endpoint: object, rule: RouteRule | None, name: str | None,
                 convertor: Any) -> None:
        self.route = route
        self.endpoint = endpoint
        self.rule = rule
        self.name = name
        self.convertor = convertor
        self.plan: Any = None
        """What an enforcement point computed once for every path of the route (its own, or
        None)."""


@dataclass(frozen=True, slots=True)
class _Leaf:
    """One endpoint: the route that calls it, its full template and its rules by method."""

    route: object
    endpoint: object | None
    template: str
    rules: Mapping[str, RouteRule]
    heads: bool = True
    """The route takes ``HEAD`` (Starlette's ``GET`` routes do, FastAPI's do not): only then
    is a ``HEAD`` judged by the ``GET`` declaration."""

    def rule_for(self, method: str) -> RouteRule | None:
        rules = self.rules
        rule = rules.get(method)
        if rule is None and method == "HEAD" and self.heads:
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

    __slots__ = ("_answers", "_csv", "_indexes", "_leaves", "_public", "_router", "_shapes")

    def __init__(self, router: Router, table: RouteTable, public: Iterable[str]) -> None:
        self._router = router
        self._csv: dict[str, dict[str, RouteRule]] = {}
        for rule in table.rules:
            self._csv.setdefault(_same(rule.template), {}).setdefault(rule.method, rule)
        self._public = frozenset(_same(p) for p in public)
        self._leaves: dict[tuple[int, str], _Leaf] = {}
        self._indexes: dict[int, _Index] = {}
        self._shapes: dict[tuple[int, str], Shape] = {}
        """By (route id, method): what :meth:`quick` answers with for the route."""
        self._answers: dict[tuple[object, ...], Answer] = {}
        """Answers by (type, method, root_path, path), with the routes list they were found
        in and what it held then (an answer holds while ``router.routes`` is that list
        and it holds the same: :meth:`remembered`)."""
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
        """The endpoint the app will call for ``scope``, and its declaration; scope is unchanged.

        A remembered answer when one holds for the scope (see the module's docstring).
        """
        key = _answer_key(scope)
        if key is None:
            return self._resolve(scope, None)
        hit = self.remembered(key)
        if hit is not None:
            return hit.resolved
        found = self.found(scope, key)
        return found.resolved if isinstance(found, Answer) else found

    def found(self, scope: Scope, key: tuple[object, ...]) -> Answer | Resolved:
        """The answer for ``scope`` found now (none is remembered under ``key``): remembered
        when it may be (then the :class:`Answer`), else the :class:`Resolved` found.

        Matched by :meth:`quick` when it can, else through the routes' own ``matches``.

        Args:
            scope: The request's scope (unchanged).
            key: Its answer's key: ``(type, method, root_path, path)`` of a scope that carries
                nothing else a route reads (a path too long to remember is resolved afresh).
        """
        if len(key[3]) > CACHED_PATH:  # type: ignore[arg-type]
            return self._resolve(scope, None)
        quick = self.quick(scope, key)
        if quick is not None:
            return quick
        resolved = self._resolve(scope, key)
        answer = self._answers.get(key)
        return answer if answer is not None and answer.resolved is resolved else resolved

    def quick(self, scope: Scope, key: tuple[object, ...]) -> Answer | Resolved | None:
        """The router's answer for ``scope``, matched here; None when it is not found so.

        When the app's router holds only routes that :attr:`_Index.matched` (Starlette's or
        FastAPI's ``Route``, ``WebSocketRoute`` and ``Mount``, compiled as written, with
        Starlette's convertors) and the scope carries nothing else they read (``key`` is
        :func:`_answer_key`'s), what their ``matches`` does comes down to the compiled
        pattern and the methods: the first candidate whose ``path_regex`` matches the route
        path and whose methods hold the request's is the FULL match, else the first that
        matches is the PARTIAL one, as the router picks. Only the subject's parameter is
        converted (Starlette's convertors cannot fail on what their patterns match, in a path
        of at most :data:`CACHED_PATH` characters). A ``Mount`` that matches is left to
        :meth:`_resolve` (None).

        Args:
            scope: The request's scope (unchanged).
            key: Its answer's key (:func:`_answer_key`).
        """
        routes = self._router.routes
        index = self._indexes.get(id(routes))
        if index is None or not index.matched or routes != index.held:
            return None
        kind, method, root, path = key
        if root:
            path = get_route_path(scope)
        partial = None
        for route, plain in index.matchable(path, kind):  # type: ignore[arg-type]
            match = route.path_regex.match(path)
            if match is None:
                continue
            if plain == _MOUNT:
                return None
            if plain == _ROUTE:
                methods = route.methods
                if methods and method not in methods:
                    if partial is None:
                        partial = route, match
                    continue
            return self._matched(route, match, key, routes, index)
        if partial is not None:
            return self._matched(*partial, key, routes, index)
        return NOWHERE

    def _matched(self, route: Any, match: re.Match[str], key: tuple[object, ...],
                 routes: list[BaseRoute], index: _Index) -> Answer:
        """The answer for the route :meth:`quick` picked, remembered under ``key``."""
        method: str = key[1] if key[0] == "http" else "GET"  # type: ignore[assignment]
        shape = self._shapes.get((id(route), method))
        if shape is None or shape.route is not route:
            leaf = self._leaf(route, None, "", route.endpoint)
            rule = leaf.rule_for(method)
            name = rule.subject if rule is not None else None
            convertor = route.param_convertors.get(name) if name is not None else None
            shape = Shape(route, leaf.endpoint, rule, name if convertor is not None else None,
                          convertor)
            if len(self._shapes) >= _CACHE:
                self._shapes.clear()
            self._shapes[id(route), method] = shape
        convertor = shape.convertor
        subject = (None if convertor is None
                   else str(convertor.convert(match.group(shape.name))))  # type: ignore[arg-type]
        return self._keep(key, Answer(None, routes, index, shape, subject))

    def _keep(self, key: tuple[object, ...], answer: Answer) -> Answer:
        """Remember ``answer`` under ``key`` (all forgotten at once past :data:`ANSWERS`)."""
        answers = self._answers
        if len(answers) >= ANSWERS:
            answers.clear()
        answers[key] = answer
        return answer

    def remembered(self, key: tuple[object, ...]) -> Answer | None:
        """The answer remembered under ``key`` while it holds; None otherwise.

        Args:
            key: ``(type, method, root_path, path)`` of a scope that carries nothing
                else a route reads (no ``path_params``, no FastAPI state).
        """
        hit = self._answers.get(key)
        if hit is not None:
            routes = hit.routes
            if self._router.routes is routes and routes == hit.held:
                return hit
        return None

    def _resolve(self, scope: Scope, key: tuple[object, ...] | None) -> Resolved:
        """Resolve ``scope`` through the app's routes; remember the answer under ``key`` if it may.

        Args:
            scope: The request's scope (unchanged).
            key: The answer's key (:func:`_answer_key`), None when it is not to be remembered.
        """
        method: str = scope["method"] if scope["type"] == "http" else "GET"
        work = dict(scope)
        nested = work.get("fastapi")
        if isinstance(nested, dict):
            work["fastapi"] = dict(nested)
        routes: Sequence[BaseRoute] = self._router.routes
        root = routes
        prefix = ""
        for _ in range(_MAX_DEPTH):
            route, child = _pick(self._candidates(routes, work), work)
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
            resolved = Resolved(leaf.endpoint, rule, subject)
            if key is not None and routes is root and isinstance(root, list):
                self._remember(key, resolved, root, route)
            return resolved
        return NOWHERE

    def _remember(self, key: tuple[object, ...], resolved: Resolved, routes: list[BaseRoute],
                  route: BaseRoute) -> None:
        """Keep ``resolved`` for ``key`` when the app's router alone found it by path and method."""
        index = self._indexes.get(id(routes))
        if (index is None or not index.by_path or isinstance(route, Mount)
                or _included(route) is not None or tuple(routes) != index.routes):
            return
        self._keep(key, Answer(resolved, routes, index))

    def _candidates(self, routes: Sequence[BaseRoute], work: Scope) -> Sequence[BaseRoute]:
        """The routes of one router that could match ``work``'s path, in the router's order."""
        nested = work.get("fastapi")
        if isinstance(nested, dict) and nested.get(_EFFECTIVE_CONTEXT) is not None:
            return routes  # an included router's context decides what FastAPI's routes match
        index = self._indexes.get(id(routes))
        if index is None or tuple(routes) != index.routes:  # built once; again if changed
            if len(self._indexes) >= _CACHE:
                self._indexes.clear()
            index = self._indexes[id(routes)] = _Index(routes)
        return index.candidates(get_route_path(work))

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
        methods = getattr(route, "methods", None)  # None: every method (a class, a mount)
        return _Leaf(route, endpoint, template, rules, methods is None or "HEAD" in methods)


IndexKey = tuple[str | None, int | None, str | None]
"""What a route's path must have to match: first segment, segment count, last segment
(None: any)."""


def index_key(route: BaseRoute) -> IndexKey | None:
    """The segments a path needs for ``route`` to match it; None when that cannot be known.

    Only a route whose ``matches`` is a ``Route``'s, ``WebSocketRoute``'s or ``Mount``'s
    (Starlette's or FastAPI's own; a subclass with a ``matches`` of its own is not indexed)
    whose compiled pattern is exactly what its
    template compiles to is indexed: its literal first segment, and, when every
    parameter is one of Starlette's ``/``-free convertors (``str``, ``int``,
    ``float``, ``uuid``), its segment count and literal last segment.
    """
    plain = _PLAIN.get(type(route).matches)
    if plain is None:
        return None
    base = Mount if plain == _MOUNT else None
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    template = path + "/{path:path}" if base is Mount else path
    if not template.startswith("/"):
        return None
    try:
        regex, _format, convertors = compile_path(template)
    except Exception:  # not a template Starlette compiles: ask it for every path
        return None
    own = getattr(route, "param_convertors", None)
    compiled = getattr(route, "path_regex", None)
    if (compiled is None or regex.pattern != compiled.pattern
            or not isinstance(own, dict)
            or {k: type(v) for k, v in own.items()} != {k: type(v) for k, v in convertors.items()}):
        return None
    segments = template[1:].split("/")
    first = segments[0] if "{" not in segments[0] else None
    if base is Mount or not all(type(c) in _SLASH_FREE for c in convertors.values()):
        return first, None, None
    last = segments[-1] if "{" not in segments[-1] else None
    return first, len(segments), last


class _Index:
    """A router's routes filed by the segments a path needs; candidates in the router's order.

    Args:
        routes: The router's routes, in its order.
    """

    __slots__ = ("_cache", "_counts", "_firsts", "_keys", "_lasts", "_matchable", "by_path",
                 "held", "matched", "routes")

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = tuple(routes)
        self.held = list(self.routes)
        """The routes as a list, to compare the router's own list with (shared by the answers
        found through this index)."""
        self.by_path = all(_by_path(r) for r in self.routes)
        """Every route matches on the scope's type, path, root_path and method alone."""
        self._keys = tuple(index_key(r) for r in self.routes)
        self.matched = self.by_path and all(k is not None for k in self._keys)
        """Every route also matches with the pattern and Starlette's convertors its template
        compiles to: :meth:`AppRoutes.quick` may match them itself."""
        known = [k for k in self._keys if k is not None]
        self._firsts = frozenset(k[0] for k in known if k[0] is not None)
        self._counts = frozenset(k[1] for k in known if k[1] is not None)
        self._lasts = frozenset(k[2] for k in known if k[2] is not None)
        self._cache: dict[tuple[object, object, object], tuple[BaseRoute, ...]] = {}
        self._matchable: dict[tuple[object, ...], tuple[tuple[Any, int], ...]] = {}

    def _key(self, path: str) -> tuple[object, object, object]:
        """What the candidates for ``path`` are filed by: what routes name, never the request's
        own values (bounded, and no ids)."""
        segments = path[1:].split("/")
        first, last, count = segments[0], segments[-1], len(segments)
        return (first if first in self._firsts else _ANY,
                count if count in self._counts else -1,
                last if last in self._lasts else _ANY)

    def candidates(self, path: str) -> Sequence[BaseRoute]:
        """The routes that could match ``path`` (the route path, root path removed), in order.

        Every route for a path that does not start with ``/`` or ends with a newline (a
        compiled template's ``$`` also matches before a last ``\n``: ``/a`` matches
        ``/a\n``, whose segments are not the template's).
        """
        if not path.startswith("/") or path.endswith("\n"):
            return self.routes
        key = self._key(path)
        found = self._cache.get(key)
        if found is None:
            want_first, want_count, want_last = key
            found = tuple(
                route for route, k in zip(self.routes, self._keys, strict=True)
                if k is None or ((k[0] is None or k[0] == want_first)
                                 and (k[1] is None or k[1] == want_count)
                                 and (k[2] is None or k[2] == want_last)))
            if len(self._cache) >= _CACHE:
                self._cache.clear()
            self._cache[key] = found
        return found

    def matchable(self, path: str, kind: str) -> tuple[tuple[Any, int], ...]:
        """The candidates for ``path`` that a ``kind`` scope can match, in the router's order,
        each with what its ``matches`` is (:data:`_PLAIN`); only for an index that is
        :attr:`matched`."""
        if path.startswith("/") and not path.endswith("\n"):
            segments = path.split("/")  # "" first: _key's filing, inlined (a new path's cost)
            first, last, count = segments[1], segments[-1], len(segments) - 1
            key: tuple[object, ...] = (kind, first if first in self._firsts else _ANY,
                                       count if count in self._counts else -1,
                                       last if last in self._lasts else _ANY)
        else:
            key = (kind,)
        found = self._matchable.get(key)
        if found is None:
            want = _ROUTE if kind == "http" else _SOCKET
            found = tuple((route, plain) for route in self.candidates(path)
                          if (plain := _PLAIN[type(route).matches]) == want or plain == _MOUNT)
            if len(self._matchable) >= _CACHE:
                self._matchable.clear()
            self._matchable[key] = found
        return found


def _by_path(route: BaseRoute) -> bool:
    """Whether ``route`` matches on the scope's type, path, root_path and method alone.

    A route whose ``matches`` is Starlette's own ``Route``'s, ``WebSocketRoute``'s or
    ``Mount``'s, or FastAPI's ``APIRoute``'s or ``APIWebSocketRoute``'s (which read nothing
    else when the scope has no FastAPI state), whose convertors are Starlette's own.
    """
    if type(route).matches not in _PLAIN:
        return False
    convertors = getattr(route, "param_convertors", None)
    return isinstance(convertors, dict) and all(
        type(c) in _OWN_CONVERTORS for c in convertors.values())


def _answer_key(scope: Scope) -> tuple[object, ...] | None:
    """What an answer is remembered by: (type, method, root_path, path); None: not remembered.

    None for a scope that carries something else a route's ``matches`` reads (``path_params``,
    FastAPI's state), a long path, or a method longer than ``MAX_METHOD`` (refused, and never
    kept: a client could send a new one of thousands of characters each time).
    """
    path = scope["path"]
    if len(path) > CACHED_PATH or "path_params" in scope or "fastapi" in scope:
        return None
    kind = scope["type"]
    method = scope["method"] if kind == "http" else None
    if method is not None and len(method) > MAX_METHOD:  # refused: no answer kept for it
        return None
    return (kind, method, scope.get("root_path", ""), path)


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

