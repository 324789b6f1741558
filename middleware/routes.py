"""HTTP route -> data categories, action and data-subject parameter.

Routes come from ``policies/routes.csv`` (any ASGI app, and the sidecar) or
from :func:`guarded` declarations on FastAPI/Starlette endpoints. The
categories always come from the route, never from the caller.

``routes.csv`` has one route per line, ``#`` starts a comment::

    # method, path template, categories, action, subject parameter
    GET,  /customers/{customer_id},         identity contact, read,  customer_id
    PUT,  /customers/{customer_id}/contact, contact,          write, customer_id
    GET,  /healthz,                         public

Categories are separated by spaces; ``public`` instead of categories marks a
route that needs no decision. The method may be ``*`` (any method).

Rows are tried in file order and the first row whose method and path match
wins, as Starlette tries its routes in registration order; a row that an
earlier row matches whenever it would match is refused, since it can never be
used. Path parameters match as Starlette's convertors match.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from starlette.convertors import CONVERTOR_TYPES
from starlette.routing import compile_path

from guard._errors import PolicyError
from guard._types import Action
from guard.policy._source import field_columns, refuse_hidden_break
from middleware.fields import FieldPlan, route_fields

__all__ = [
    "DECLARATION_ATTR",
    "RouteMatch",
    "RouteRule",
    "RouteTable",
    "compile_template",
    "declared_rules",
    "guarded",
    "public",
    "sample_path",
]

DECLARATION_ATTR = "__guard_route__"
"""Attribute :func:`guarded` sets on an endpoint; holds a :class:`Declaration`."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})
_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}")
_PARAM_NAME = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)")
_CONVERTORS = ("str", "int", "float", "uuid", "path")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class RouteRule:
    """What one route touches.

    Args:
        method: Upper-case HTTP method, or ``*``.
        template: Path template, e.g. ``/customers/{customer_id}``.
        categories: The data categories the route reads or writes.
        action: ``read`` or ``write``.
        subject: The path parameter naming the data subject, if any.
        public: True for a route that needs no decision (still counted).
        mode: ``deny`` (every category must be allowed) or ``minimise`` (the
            response keeps the fields of the categories allowed).
        fields: Which response fields carry which category (a minimise route).
    """

    method: str
    template: str
    categories: tuple[str, ...]
    action: Action
    subject: str | None
    public: bool
    mode: str = "deny"
    fields: FieldPlan | None = None

    def __post_init__(self) -> None:
        if self.mode == "minimise" and (self.action is Action.WRITE
                                        or self.method in CHANGING_METHODS):
            raise PolicyError(f"{self.method} {self.template}: {MINIMISED_WRITE}")


CHANGING_METHODS = frozenset({"*", "PUT", "PATCH", "DELETE"})
"""Methods a ``minimise`` route may not take: each changes what it names (``*`` takes them)."""
MINIMISED_WRITE = ("a minimise route is a read (GET, or POST asking with a body): it releases "
                   "the fields of an answer, while a write, PUT, PATCH, DELETE or any method "
                   "(*) would run with every field of its body once one category is released "
                   "(use mode deny)")
"""Why a ``minimise`` route may be neither a write nor a method that changes what it names."""


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A rule and the path parameters it matched."""

    rule: RouteRule
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class Declaration:
    """A route declaration made in code with :func:`guarded` or :func:`public`."""

    categories: tuple[str, ...]
    action: Action
    subject: str | None
    public: bool
    mode: str = "deny"


MODES = ("deny", "minimise")


def guarded(
    categories: Sequence[str] | None = None,
    action: Action | str = Action.READ,
    subject: str | None = None,
    mode: str = "deny",
) -> Callable[[F], F]:
    """Declare what an endpoint touches; the middleware reads it before the handler runs.

    Use it under or over ``@app.get(...)``; the endpoint itself is unchanged::

        @app.get("/customers/{customer_id}")
        @guarded(categories=["identity", "contact"], action="read", subject="customer_id")
        async def customer(customer_id: str) -> dict[str, str]: ...

    Args:
        categories: Data categories the endpoint reads or writes (at least one);
            None: those its ``response_model``'s fields carry (``middleware.Category``).
        action: ``read`` or ``write``.
        subject: Path parameter that names the data subject.
        mode: ``deny`` (every category must be allowed) or ``minimise`` (decided per
            category; fields of a withheld category are removed from the response).
    """
    if mode not in MODES:
        raise PolicyError(f"guarded(): mode must be deny or minimise, not {mode!r}")
    cats = () if categories is None else tuple(categories)
    if categories is not None and (not cats or isinstance(categories, str)):
        raise PolicyError("guarded() needs a list of one or more categories")
    for cat in cats:
        if not _KEY.match(cat):
            raise PolicyError(f"guarded(): {cat!r} is not a category key")
    try:
        act = Action(action)
    except ValueError:
        raise PolicyError(f"guarded(): action must be read or write, not {action!r}") from None
    if mode == "minimise" and act is Action.WRITE:
        raise PolicyError(f"guarded(): {MINIMISED_WRITE}")
    return _declare(Declaration(cats, act, subject, public=False, mode=mode))


def public() -> Callable[[F], F]:
    """Declare an endpoint that needs no decision (health checks); it is still counted."""
    return _declare(Declaration((), Action.READ, None, public=True))


def _declare(declaration: Declaration) -> Callable[[F], F]:
    def mark(endpoint: F) -> F:
        setattr(endpoint, DECLARATION_ATTR, declaration)
        return endpoint

    return mark


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A path template's regex (Starlette's) and its parameter names; ValueError if malformed."""
    if not template.startswith("/"):
        raise ValueError("a path template starts with /")
    names: list[str] = []
    for found in _PARAM.finditer(template):
        name, conv = found.group(1), found.group(2) or "str"
        if conv not in _CONVERTORS:
            raise ValueError(f"unknown parameter type {conv!r} in {found.group(0)}")
        if name in names:
            raise ValueError(f"parameter {name!r} appears twice")
        names.append(name)
    stripped = _PARAM.sub("", template)
    if "{" in stripped or "}" in stripped:
        raise ValueError("unbalanced { } in the path template")
    regex, _, _ = compile_path(template)
    return regex, tuple(names)


_SAMPLES = {"str": "a", "path": "a", "int": "1", "float": "1",
            "uuid": "00000000-0000-0000-0000-000000000000"}


def sample_path(template: str) -> str:
    """A path ``template`` matches, each parameter a value its convertor takes."""
    return _PARAM.sub(lambda m: _SAMPLES[m.group(2) or "str"], template)


@lru_cache(maxsize=1024)  # asked per request (subject_ok) for a handful of templates
def path_parameters(template: str) -> frozenset[str]:
    """The names of a template's ``{name:path}`` parameters (they may span segments)."""
    return frozenset(m.group(1) for m in _PARAM.finditer(template) if m.group(2) == "path")


class RouteTable:
    """Routes in file order: the first rule whose method and path match a request wins."""

    __slots__ = ("_entries", "rules")

    def __init__(self, rules: Iterable[RouteRule]) -> None:
        self.rules: tuple[RouteRule, ...] = tuple(rules)
        self._entries: tuple[_Entry, ...] = tuple(_entry(rule) for rule in self.rules)

    @classmethod
    def from_csv(cls, path: Path) -> RouteTable:
        """Read ``routes.csv``; raises PolicyError naming line and column of a bad row."""
        try:
            text = path.read_bytes().decode("utf-8")  # as written: a lone \r stays one
        except OSError as exc:
            raise PolicyError(f"cannot read routes: {exc.strerror}", path=str(path)) from exc
        except UnicodeDecodeError as exc:
            raise PolicyError(f"cannot read routes: not UTF-8 ({exc.reason})",
                              path=str(path)) from None
        return cls(parse_routes(text, str(path)))

    def extended(self, rules: Iterable[RouteRule]) -> RouteTable:
        """A new table with ``rules`` ahead of this table's rules."""
        return RouteTable([*rules, *self.rules])

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The first rule (in file order) for a request, or None when no rule matches it.

        Also None when a rule before the one that matches would match the path in
        another ASCII case: many upstreams route without regard to case (Express and
        ASP.NET Core by default), so ``/customers/EXPORT`` would run the handler of
        ``/customers/export`` while the guard judged ``/customers/{customer_id}``. And
        None when such a rule would match the path without its trailing slash, or with
        one: Express (``strict`` off), Rails, ASP.NET Core and Spring MVC before 6 route
        ``/customers/export/`` to ``/customers/export`` (and ASP.NET Core's catch-all
        ``/files/{**name}`` takes ``/files``), so a later ``{name:path}`` row (a public
        catch-all) would be judged while the upstream ran the earlier row's handler. And
        None when such a rule would match the path without a ``.format`` after its last
        segment: Rails (and Spring MVC before 5.3, also ``/customers/export.tar.gz``) routes
        ``/customers/export.json`` to ``/customers/export``, which the guard would judge as
        the subject ``export.json``.
        """
        method = method.upper()
        upper: bool | None = None
        readings: tuple[str, ...] | None = None  # as a router blind to a slash or format reads it
        slashed_path: str | None = None  # the path with a slash put after it
        for methods, match, folded, capitals, slashed, rule in self._entries:
            if methods is None or method in methods:
                found = match(path)
                if found is not None:
                    return RouteMatch(rule, found.groupdict())
                if readings is None:
                    readings = _readings(path)
                if readings or (slashed and len(path) > 1):
                    if upper is None:
                        upper = _CAPITAL.search(path) is not None
                    blind = (upper or capitals)
                    for other in readings:
                        if match(other) is not None or (blind and folded(other) is not None):
                            return None
                    if slashed and len(path) > 1 and path[-1] != "/":
                        if slashed_path is None:
                            slashed_path = path + "/"
                        if match(slashed_path) is not None or (
                                blind and folded(slashed_path) is not None):
                            return None
                if not capitals:  # a path without capitals matches it in one case alone
                    if upper is None:
                        upper = _CAPITAL.search(path) is not None
                    if not upper:
                        continue
                if folded(path) is not None:
                    return None  # another case of this rule's path: not judged as a later one
        return None

    def __len__(self) -> int:
        return len(self.rules)


_CAPITAL = re.compile("[A-Z]")


def _readings(path: str) -> tuple[str, ...]:
    """``path`` as an upstream that ignores a trailing slash, or a ``.format`` after the last
    segment, reads it (none when it holds neither): ``/a/b.json/`` -> ``/a/b.json``, ``/a/b``.

    A format starts at the last segment's last dot (Rails) or at its first (Spring MVC's
    ``.*`` suffix match takes ``/a/b.tar.gz`` and ``/a/b..`` for ``/a/b``); both are read.
    """
    if len(path) < 2:
        return ()
    bare = path[:-1] if path[-1] == "/" else path
    readings: tuple[str, ...] = (bare,) if bare is not path else ()
    head, _, last = bare.rpartition("/")
    first, final = last.find(".", 1), last.rfind(".")
    if first > 0:
        readings += (head + "/" + last[:first],)
        if final != first:
            readings += (head + "/" + last[:final],)
    return readings


_Entry = tuple[frozenset[str] | None, Any, Any, bool, bool, RouteRule]
"""A rule as :meth:`RouteTable.match` tries it (see :func:`_entry`)."""
_ENDS_IN_PATH = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*:path\}$")


def _entry(rule: RouteRule) -> _Entry:
    """A rule's accepted methods, its path's matcher, the same in any ASCII case, whether
    its literal text holds a capital, whether it may match a path only once a slash is put
    after it (its template ends in ``/`` or in a ``{name:path}`` parameter), and the rule."""
    regex = compile_template(rule.template)[0]
    folded = re.compile(regex.pattern, re.IGNORECASE | re.ASCII)
    template = rule.template
    slashed = len(template) > 1 and (template.endswith("/")
                                     or _ENDS_IN_PATH.search(template) is not None)
    return (_accepted_methods(rule.method), regex.match, folded.match,
            _CAPITAL.search(_PARAM.sub("", template)) is not None, slashed, rule)


def parse_routes(text: str, origin: str = "routes.csv") -> list[RouteRule]:
    """Parse routes.csv text into rules; raises PolicyError with line and column."""
    rules: list[RouteRule] = []
    seen: dict[tuple[str, str], int] = {}
    lines: list[int] = []
    refuse_hidden_break(text, origin)  # a row no reviewer would see is never read
    for lineno, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            rule = _parse_row(line, lineno, origin, seen)
            for earlier, at in zip(rules, lines, strict=True):
                if shadows(earlier, rule):
                    column = field_columns(line)[1]
                    raise PolicyError(
                        f"{rule.method} {rule.template} can never match: line {at} "
                        f"({earlier.method} {earlier.template}) matches every request it would",
                        path=origin, line=lineno, column=column,
                        hint="rows are tried in file order; put the more specific row first")
            rules.append(rule)
            lines.append(lineno)
    return rules


def _accepted_methods(method: str) -> frozenset[str] | None:
    """The request methods a rule's method takes (None: any); GET takes HEAD too."""
    if method == "*":
        return None
    return frozenset({"GET", "HEAD"}) if method == "GET" else frozenset({method})


def shadows(earlier: RouteRule, later: RouteRule) -> bool:
    """True when ``earlier`` matches every request ``later`` would match (it can never win).

    Sound, not complete: it says True only when it is certain.
    """
    methods = _accepted_methods(earlier.method)
    if methods is not None and (later.method == "*" or later.method not in methods):
        return False
    return _template_covers(earlier.template, later.template)


def _shape(segment: str) -> str:
    """A segment with parameter names dropped: ``{id}`` and ``{x:str}`` both read ``{:str}``."""
    return _PARAM.sub(lambda m: "{:" + (m.group(2) or "str") + "}", segment)


def _template_covers(a: str, b: str) -> bool:
    """True when every path template ``b`` matches is matched by template ``a``."""
    sa, sb = a.split("/"), b.split("/")
    shape_a, shape_b = [_shape(s) for s in sa], [_shape(s) for s in sb]
    if shape_a == shape_b:
        return True
    wide_a = [i for i, s in enumerate(shape_a) if "{:path}" in s]
    wide_b = [i for i, s in enumerate(shape_b) if "{:path}" in s]
    if wide_a:
        # Only a whole last segment {x:path} is understood: it takes any rest of the path.
        last = len(sa) - 1
        if wide_a != [last] or shape_a[last] != "{:path}" or len(sb) < len(sa):
            return False
        if any(i < last for i in wide_b):
            return False
        return all(_segment_covers(sa[i], sb[i]) for i in range(last))
    if wide_b or len(sa) != len(sb):
        return False
    return all(_segment_covers(x, y) for x, y in zip(sa, sb, strict=True))


def _segment_covers(a: str, b: str) -> bool:
    """True when every text segment ``b`` matches is matched by segment ``a`` (no ``/``)."""
    if _shape(a) == _shape(b):
        return True
    whole = _PARAM.fullmatch(a)
    if whole is None:  # a literal, or literal text around a parameter: only equal shapes
        return False
    conv = whole.group(2) or "str"
    if conv == "str":
        return b != ""
    if _PARAM.search(b) is None:
        return re.fullmatch(CONVERTOR_TYPES[conv].regex, b) is not None
    other = _PARAM.fullmatch(b)
    if other is None:
        return False
    conv_b = other.group(2) or "str"
    return conv_b == conv or (conv == "float" and conv_b == "int")


def _parse_row(
    line: str, lineno: int, origin: str, seen: dict[tuple[str, str], int]
) -> RouteRule:
    columns = field_columns(line)

    def fail(index: int, message: str, hint: str | None = None) -> NoReturn:
        col = columns[index] if index < len(columns) else len(line) + 1
        raise PolicyError(message, path=origin, line=lineno, column=col, hint=hint)

    values = [f.strip() for f in next(csv.reader([line], skipinitialspace=True))]
    if len(values) < 3:
        fail(len(values), "expected: method, path template, categories[, action, subject, mode]")
    if len(values) > 6:
        fail(6, "too many fields (at most 6: method, path, categories, action, subject, mode)")
    method, template, cats = values[0].upper(), values[1], values[2].split()
    mode, plan = "deny", None
    if len(values) > 5 and values[5]:
        mode = values[5].lower()
        if mode not in MODES:
            fail(5, f"mode must be deny or minimise, not {values[5]!r}")
    if any("=" in c for c in cats):
        plan, cats = _field_paths(cats, lambda message, hint=None: fail(2, message, hint))
    if mode == "minimise" and plan is None:
        fail(2, "a minimise route maps JSON field paths to categories",
             hint="e.g. name=identity.name contact.email=contact.email cards[].number="
                  "financial.payment_card")
    if method not in _METHODS:
        fail(0, f"unknown HTTP method {values[0]!r}")
    try:
        _, names = compile_template(template)
    except ValueError as exc:
        fail(1, f"bad path template {template!r}: {exc}")
    if not cats:
        fail(2, "no categories", hint="list categories separated by spaces, or 'public'")
    is_public = cats == ["public"]
    action, subject = Action.READ, None
    if is_public:
        if any(values[3:]):
            fail(3, "a public route takes no action or subject")
    else:
        for cat in cats:
            if cat == "public" or not _KEY.match(cat):
                fail(2, f"{cat!r} is not a category key", hint="e.g. contact.email")
        if len(values) > 3 and values[3]:
            try:
                action = Action(values[3].lower())
            except ValueError:
                fail(3, f"action must be read or write, not {values[3]!r}")
        if len(values) > 4 and values[4]:
            subject = values[4]
            if subject not in names:
                fail(4, f"subject parameter {subject!r} is not in the path template",
                     hint=f"parameters: {', '.join(names) or 'none'}")
    if mode == "minimise" and (action is Action.WRITE or method in CHANGING_METHODS):
        fail(5, MINIMISED_WRITE)
    key = (method, template)
    if key in seen:
        fail(0, f"{method} {template} is already declared on line {seen[key]}")
    seen[key] = lineno
    return RouteRule(method, template, () if is_public else tuple(cats), action, subject,
                     is_public, mode, plan)


def _field_paths(
    tokens: list[str], fail: Callable[..., NoReturn]
) -> tuple[FieldPlan, list[str]]:
    """``path=category`` tokens: the field plan and its categories in order.

    ``path=public`` names a field that is no personal data (sent to every caller); the
    plan removes every key no token names.
    """
    mapping: dict[str, str | None] = {}
    for token in tokens:
        path, sep, category = token.partition("=")
        if not sep or not path or not _KEY.match(category):
            fail(f"{token!r} is not a field path and a category",
                 hint="path=category, e.g. contact.email=contact.email, or id=public")
        mapping[path] = None if category == "public" else category
    try:
        plan = FieldPlan.from_paths(mapping)
    except PolicyError as exc:
        fail(exc.message if hasattr(exc, "message") else str(exc))
    return plan, [c for c in dict.fromkeys(mapping.values()) if c is not None]


def declared_rules(
    declaration: Declaration, route: object, template: str, methods: Iterable[str]
) -> list[RouteRule]:
    """The rules a :func:`guarded`/:func:`public` declaration on ``route`` makes, one per method.

    Raises:
        PolicyError: The declared subject is not a parameter of ``template``, or
            the response model disagrees with the declared categories.
    """
    if declaration.subject and declaration.subject not in _PARAM_NAME.findall(template):
        raise PolicyError(f"guarded(): subject {declaration.subject!r} is not a "
                          f"parameter of {template}")
    cats, plan = (declaration.categories, None) if declaration.public else route_fields(
        declaration.categories, declaration.mode, route, template)
    return [RouteRule(method.upper(), template, cats, declaration.action, declaration.subject,
                      declaration.public, declaration.mode, plan) for method in methods]


def rules_from_app(app: Any) -> list[RouteRule]:
    """Rules from :func:`guarded`/:func:`public` declarations on a Starlette/FastAPI app.

    Walks ``app.router.routes`` (into mounts) and turns each declared endpoint
    into one rule per HTTP method of its route.
    """
    router = getattr(app, "router", None)
    routes = getattr(router, "routes", None) or getattr(app, "routes", None) or []
    return list(_walk(routes, ""))


def _walk(routes: Iterable[Any], prefix: str) -> Iterable[RouteRule]:
    for route in routes:
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        children = getattr(route, "routes", None)
        endpoint = getattr(route, "endpoint", None)
        declaration = getattr(endpoint, DECLARATION_ATTR, None)
        if isinstance(declaration, Declaration):
            methods = sorted(getattr(route, "methods", None) or ["*"])
            if not methods or "GET" in methods:
                methods = [m for m in methods if m != "HEAD"]
            yield from declared_rules(declaration, route, prefix + path, methods)
        elif children:
            yield from _walk(children, prefix + path.rstrip("/"))
