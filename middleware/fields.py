"""Data categories declared on response models, and responses minimised to what is released.

A field of a Pydantic model or a dataclass names its data category with
:class:`Category` in ``Annotated``::

    class Contact(BaseModel):
        email: Annotated[str, Category("contact.email")]
        phone: Annotated[str, Category("contact.phone", mask="withheld")]

    class Customer(BaseModel):
        customer_id: str                      # no category: not personal data, always sent
        contact: Contact                      # nested models and lists are followed
        cards: Annotated[list[Card], Category("financial.payment_card")]

:func:`plan_for` turns a model into a :class:`FieldPlan`: the categories its
fields carry and, for a JSON body of that model, which keys to remove or mask
when a category is withheld (:meth:`FieldPlan.minimise`).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import pathlib
import re
import sys
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, Union, get_args, get_origin

import typing_extensions
from typing_extensions import is_typeddict

from guard._errors import PolicyError

__all__ = ["REMOVE", "Category", "FieldPlan", "FieldRule", "categories_of", "plan_for",
           "withheld_optional"]

_T = TypeVar("_T")
_KEY = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
_MAX_STEPS = 256


class _Remove:
    """The default treatment of a withheld field: the key is left out."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "REMOVE"


REMOVE: Any = _Remove()
"""``Category(..., mask=REMOVE)`` (the default): a withheld field's key is removed."""


@dataclass(frozen=True, slots=True)
class Category:
    """The data category of a response field (use in ``Annotated``).

    Args:
        key: A category key of the policy, e.g. ``contact.email``.
        mask: What a withheld field becomes: :data:`REMOVE` (the default: the key
            is left out) or a JSON value that replaces its value (``"***"``, ``None``).
    """

    key: str
    mask: Any = REMOVE

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            raise PolicyError(f"Category(): {self.key!r} is not a category key "
                              "(hint: e.g. contact.email)")

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        """The field's JSON schema (and OpenAPI) names its category and what withholding does."""
        schema: dict[str, Any] = dict(handler(core_schema))
        how = ("left out" if self.mask is REMOVE
               else f"replaced by {json.dumps(self.mask)}")
        note = (f"Data category {self.key}: {how} when the caller may not receive it "
                "(a route in minimise mode).")
        schema["x-data-category"] = self.key
        schema["x-withheld"] = "removed" if self.mask is REMOVE else "masked"
        schema["description"] = (f"{schema['description']} {note}" if schema.get("description")
                                 else note)
        return schema


@dataclass(frozen=True, slots=True)
class FieldRule:
    """One JSON key of an object: its category (if any) and the plan of its value."""

    name: str
    category: Category | None
    inner: FieldPlan | None


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """Which keys of a JSON object (and of the objects inside it) carry which category.

    A plan applies to an object, or to each item of a list of objects. A ``closed``
    plan also removes every key it does not name, so a field nobody declared never
    leaves unjudged: routes.csv's (nothing declares the upstream's answer) and a response
    model's (a handler may return a ``Response`` of its own, a model may allow extra keys
    or serialise itself).
    """

    rules: tuple[FieldRule, ...]
    closed: bool = False
    nullable: bool = False
    """A null may stand where the plan describes an object (a model's ``Optional`` field)."""
    scalars: bool = False
    """Any other value not an object may stand there too (a union of a model and ``str``)."""
    _steps: dict[frozenset[str], tuple[tuple[str, Any, FieldPlan | None], ...]] = (
        dataclasses.field(default_factory=dict, compare=False, repr=False))
    """Per released set: ``(key, REMOVE | mask | KEEP, inner plan)`` for the keys to touch."""
    _names: frozenset[str] = dataclasses.field(init=False, compare=False, repr=False)
    """The keys the rules name."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names", frozenset(rule.name for rule in self.rules))

    def __repr__(self) -> str:  # the fields, once each: a model holding itself is unrolled
        return f"FieldPlan(categories={self.categories!r}, closed={self.closed})"

    def fits(self, value: Any) -> bool:
        """Whether ``value``, not an object or a list, may stand where the plan applies."""
        return self.scalars if value is not None else self.nullable or self.scalars

    @property
    def categories(self) -> tuple[str, ...]:
        """Every category the plan names, in field order, once each."""
        found: dict[str, None] = {}
        self._collect(found)
        return tuple(found)

    def _collect(self, found: dict[str, None], seen: set[int] | None = None) -> None:
        seen = set() if seen is None else seen
        for rule in self.rules:
            if id(rule) in seen:  # shared by several plans (a model holding itself, unrolled)
                continue
            seen.add(id(rule))
            if rule.category is not None:
                found.setdefault(rule.category.key, None)
            if rule.inner is not None:
                rule.inner._collect(found, seen)

    def paths(self) -> dict[str, str]:
        """``{JSON path: category}`` for every categorised field (``a.b``, ``items[].c``);
        a field of a model that holds itself under the first path reaching it."""
        out: dict[str, str] = {}
        self._paths("", out, set())
        return out

    def _paths(self, prefix: str, out: dict[str, str], seen: set[int]) -> None:
        for rule in self.rules:
            if id(rule) in seen:
                continue
            seen.add(id(rule))
            path = f"{prefix}{rule.name}"
            if rule.category is not None:
                out[path] = rule.category.key
            if rule.inner is not None:
                rule.inner._paths(path + ".", out, seen)

    def minimise(self, body: Any, released: frozenset[str] | set[str]) -> Any:
        """``body`` with every field of a category not in ``released`` removed or masked.

        Objects are copied where they change; ``body`` itself is never modified.
        Lists are followed item by item; keys the plan does not name pass, unless the
        plan is ``closed``: then they are removed, and so is a value where the plan
        describes an object that is neither an object nor a list (a string in place of
        ``contact``), in an object or a list, unless the plan says it may stand there
        (:meth:`fits`).

        Args:
            body: A decoded JSON value (dicts, lists, scalars).
            released: The categories the caller may receive.
        """
        if isinstance(body, list):
            if self.closed:
                return [self.minimise(item, released) for item in body
                        if isinstance(item, (dict, list)) or self.fits(item)]
            return [self.minimise(item, released) for item in body]
        if not isinstance(body, dict):
            return body
        if not isinstance(released, frozenset):
            released = frozenset(released)
        steps = self._steps.get(released)
        if steps is None:
            steps = self._plan_steps(released)
        out: dict[str, Any] | None = None
        if self.closed and any(name not in self._names for name in body):
            out = {name: value for name, value in body.items() if name in self._names}
        for name, action, inner in steps:
            if name not in body:
                continue
            if inner is None:
                new = action  # REMOVE, or the mask
            else:
                value = body[name]
                if inner.closed and not isinstance(value, (dict, list)) and not inner.fits(value):
                    new = REMOVE  # not the object the plan describes
                else:
                    new = inner.minimise(value, released)
                    if new is value:
                        continue
            if out is None:
                out = dict(body)
            if new is REMOVE:
                del out[name]
            else:
                out[name] = new
        return body if out is None else out

    def _plan_steps(
        self, released: frozenset[str]
    ) -> tuple[tuple[str, Any, FieldPlan | None], ...]:
        """The keys to remove, mask or descend into for one released set (remembered)."""
        steps: list[tuple[str, Any, FieldPlan | None]] = []
        for rule in self.rules:
            category = rule.category
            if category is not None and category.key not in released:
                steps.append((rule.name, category.mask, None))
            elif rule.inner is not None:
                steps.append((rule.name, None, rule.inner))
        frozen = tuple(steps)
        if len(self._steps) >= _MAX_STEPS:  # released sets are few per route; stay bounded
            self._steps.clear()
        self._steps[released] = frozen
        return frozen

    @classmethod
    def from_paths(cls, paths: Mapping[str, Category | str | None]) -> FieldPlan:
        """A closed plan from ``{JSON path: category}``: ``contact.email``, ``cards[].number``.

        A path's segments are object keys; ``[]`` after a key means "each item of
        the list there" (it may be left out: lists are followed anyway). A path whose
        category is None is named without one: sent to every caller. Keys no path
        names are removed.

        Raises:
            PolicyError: A path is malformed, or names a field under a categorised one.
        """
        tree: dict[str, Any] = {}
        for path, category in paths.items():
            cat = category if category is None or isinstance(category, Category) \
                else Category(category)
            parts = [p.removesuffix("[]") for p in path.split(".")]
            if not all(parts) or any("[" in p or "]" in p for p in parts):
                raise PolicyError(f"field path {path!r} is malformed "
                                  "(hint: keys separated by dots, e.g. cards[].number)")
            node = tree
            for part in parts[:-1]:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise PolicyError(f"field path {path!r} is under a categorised field")
            if parts[-1] in node:
                raise PolicyError(f"field path {path!r} is given twice or has fields under it")
            node[parts[-1]] = cat
        return _plan_from_tree(tree)


def _plan_from_tree(tree: Mapping[str, Any]) -> FieldPlan:
    rules = []
    for name, value in tree.items():
        if value is None:  # a value with no fields: an object in it loses every key
            rules.append(FieldRule(name, None, _NO_FIELDS))
        elif isinstance(value, Category):
            rules.append(FieldRule(name, value, None))
        else:
            rules.append(FieldRule(name, None, _plan_from_tree(value)))
    return FieldPlan(tuple(rules), closed=True)


_NO_FIELDS = FieldPlan((), closed=True, nullable=True, scalars=True)
"""A ``path=public`` field of routes.csv: scalars and lists of them pass; no key of an object
in it is one a pair names."""


def plan_for(model: Any, *, by_alias: bool = True) -> FieldPlan | None:
    """The field plan of a response model (Pydantic model, dataclass, or a list of them).

    Each field is named by the key Pydantic serialises it under: its serialisation
    alias (set on the field or by an alias generator, on a model or a dataclass)
    with ``by_alias``, its Python name without.

    Returns None when no field of the model carries a :class:`Category`.

    Args:
        model: The type FastAPI serialises, e.g. ``Customer`` or ``list[Customer]``.
        by_alias: Whether the answer is serialised by alias (FastAPI's
            ``response_model_by_alias``, true by default).
    """
    plan = _plan(model, {}, by_alias, ())
    return plan if plan is not None and plan.categories else None


def categories_of(model: Any) -> tuple[str, ...]:
    """The categories the fields of ``model`` carry (empty when none does)."""
    plan = plan_for(model)
    return plan.categories if plan is not None else ()


MAX_NESTING = 32
"""How often a model may hold itself (directly or through other models) in a minimised
answer; an object of it nested deeper is sent with no key (see :func:`_plan`)."""
_NOTHING = FieldPlan((), closed=True)
"""The plan of an object nested past :data:`MAX_NESTING`: every key removed."""

Seen = dict[tuple[Any, int], "FieldPlan | None"]
Stack = tuple[type, ...] | None


def _plan(tp: Any, seen: Seen, by_alias: bool, stack: Stack) -> FieldPlan | None:
    """The plan of a type (following Annotated, Optional/Union, lists, dict values).

    A model that holds itself (``parent: Person | None``, ``orders[].customer``) is
    planned again at each level it is held at, so the fields of a nested one are judged
    as the outer one's are; past :data:`MAX_NESTING` levels an object of it that carries
    categories loses every key. ``stack`` is the models being planned around ``tp``, or
    None to plan each model once (a self-reference then is not followed): enough to tell
    whether a model carries any category.
    """
    written, tp = tp, _strip(tp)[0]
    if written is not tp and _serialised_by_code(written):
        _refuse_coded(written, tp, by_alias)
    if isinstance(tp, _ALIASES):
        return _aliased(tp, (), lambda value: _plan(value, seen, by_alias, stack), by_alias)
    origin = get_origin(tp)
    if isinstance(origin, _ALIASES):  # a generic type alias given its types
        return _aliased(origin, get_args(tp),
                        lambda value: _plan(value, seen, by_alias, stack), by_alias)
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(tp) if arg is not type(None)]
        return _merge([_plan(arg, seen, by_alias, stack) for arg in members],
                      nullable=len(members) < len(get_args(tp)))
    if origin is not None:
        args = get_args(tp)
        if origin in _LEAVES:
            return None
        if isinstance(origin, type):  # a generic dataclass, TypedDict or NamedTuple, given types
            _refuse_generic(tp, origin, args, by_alias)
        if origin in (list, tuple, set, frozenset) or _is_sequence(origin):
            return _merge([_plan(arg, seen, by_alias, stack) for arg in args
                           if arg is not Ellipsis])
        if origin is dict or _is_mapping(origin):
            # free-form keys: a categorised dict field is handled whole, but categorised
            # fields inside its keys or values could be neither judged nor removed
            inner = _merge([_plan(arg, seen, by_alias, None) for arg in args])
            if inner is not None and inner.categories:
                raise PolicyError(f"the values of {tp} carry categories "
                                  f"({', '.join(inner.categories)}) under free-form keys, "
                                  "which cannot be minimised (hint: a list of models, or a "
                                  "Category on the dict field with none inside its values)")
            return None
        if not (dataclasses.is_dataclass(origin) or is_typeddict(origin)):
            _refuse_unknown(tp, (origin, *args), by_alias)  # closed world: judged above or here
        return None
    if isinstance(tp, (str, typing.ForwardRef)):
        raise PolicyError(f"the type {tp!r} is not resolved, so its categories cannot be told "
                          "(hint: define it, then call model_rebuild() on the model naming it)")
    if not isinstance(tp, type) or not (
            isinstance(getattr(tp, "__pydantic_fields__", None), dict)
            or dataclasses.is_dataclass(tp)):
        if isinstance(tp, type):
            _refuse_hidden(tp, by_alias)
            if "__get_pydantic_core_schema__" in dir(tp):
                _refuse_unknown(tp, (tp,), by_alias)  # sent as its own core schema says
        return None  # a leaf (str, int, an enum...) or a type with no category: sent as it is
    if stack is None:
        key, inner_stack = (tp, -1), None
        if key in seen:
            return seen[key]
        seen[key] = None  # a self-referencing model: the inner reference is not followed
    else:
        depth = stack.count(tp)
        if depth > MAX_NESTING:
            return _NOTHING if _plan(tp, {}, by_alias, None) is not None else None
        key, inner_stack = (tp, depth), (*stack, tp)
        if key in seen:
            return seen[key]
    if getattr(tp, "__pydantic_root_model__", False):  # serialised bare: its root's plan
        plan = _root_plan(tp, seen, by_alias, inner_stack)
        seen[key] = plan
        return plan
    plan = FieldPlan(tuple(_fields(tp, seen, by_alias, inner_stack)), closed=True)
    seen[key] = plan
    return plan


_LEAVES: frozenset[Any] = frozenset({typing.Literal, typing_extensions.Literal})
"""Generic forms whose arguments are no types sent (``Literal["a", "b"]``)."""


def _refuse_unknown(tp: Any, inside: Iterable[Any], by_alias: bool) -> None:
    """Refuse a type the plan does not follow (a generic of an unknown origin, a class
    serialised by its own core schema) when a category-carrying type is anywhere inside
    it: what it sends is no plan's, so it would be neither judged nor minimised.

    Raises:
        PolicyError: ``tp`` is such a type.
    """
    found = sorted({key for part in inside for key in _inside(part, by_alias)})
    if found:
        raise PolicyError(f"{_type_name(tp)} carries {', '.join(found)} in a form the field "
                          "plan does not follow, so its keys cannot be judged or minimised "
                          "(hint: a Pydantic model, a list or a dict of them, or a Category "
                          "on the field itself)")


def _type_name(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else repr(tp)


def _inside(part: Any, by_alias: bool) -> set[str]:
    """The categories found anywhere inside ``part``: a type argument, a type variable's
    bound, constraints or default, an alias's value, a class's Pydantic core schema."""
    if isinstance(part, (list, tuple)):  # Callable[[...], ...]'s parameters, a ParamSpec's
        return {key for item in part for key in _inside(item, by_alias)}
    if part is Ellipsis or part is type(None):
        return set()
    if isinstance(part, type) and "__get_pydantic_core_schema__" in dir(part) and not (
            isinstance(getattr(part, "__pydantic_fields__", None), dict)):
        return _schema_categories(part, by_alias)
    found: set[str] = set()
    category = _value_category(part)
    if category is not None:
        found.add(category.key)
    plan = _plan(part, {}, by_alias, None)
    if plan is not None:
        found.update(plan.categories)
    return found


def _schema_categories(tp: type, by_alias: bool) -> set[str]:
    """The categories of the models, dataclasses and categorised values in the core schema
    of a class that builds its own (``__get_pydantic_core_schema__``)."""
    from pydantic import TypeAdapter

    if tp in _CHECKING:
        return set()
    _CHECKING.add(tp)
    try:
        try:
            schema: Any = TypeAdapter(tp).core_schema
        except Exception as exc:  # what it sends cannot be told: refused by the caller
            raise PolicyError(f"{_type_name(tp)}: cannot tell what it is serialised as "
                              f"({type(exc).__name__}), so its categories cannot be told "
                              "(hint: a Pydantic model)") from None
        found: set[str] = set()
        stack: list[Any] = [schema]
        while stack:
            node = stack.pop()
            if isinstance(node, (list, tuple)):
                stack.extend(node)
            elif isinstance(node, dict):
                stack.extend(node.values())
            elif isinstance(getattr(node, "__self__", None), Category):
                found.add(node.__self__.key)
            elif isinstance(node, Category):
                found.add(node.key)
            elif isinstance(node, type) and node is not tp:
                plan = _plan(node, {}, by_alias, None)
                if plan is not None:
                    found.update(plan.categories)
        return found
    finally:
        _CHECKING.discard(tp)


_CHECKING: set[type] = set()
"""The ``TypedDict`` and ``NamedTuple`` types :func:`_refuse_hidden` is looking inside."""


def _refuse_hidden(tp: type, by_alias: bool) -> None:
    """Refuse a ``TypedDict`` or ``NamedTuple`` whose fields carry a :class:`Category`: its
    keys are in no plan, so its categories would be neither judged nor minimised.

    Raises:
        PolicyError: ``tp`` is such a type (naming the field).
    """
    kind = ("TypedDict" if is_typeddict(tp)
            else "NamedTuple" if issubclass(tp, tuple) and hasattr(tp, "_fields") else None)
    if kind is None or tp in _CHECKING:
        return
    _CHECKING.add(tp)
    try:
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
        except Exception as exc:  # a name not defined (yet): what the field holds is unknown
            raise _unresolved(tp, exc) from None
        for name, written in hints.items():
            hint = _unqualified(written)
            carries = _value_category(hint) is not None
            if not carries:
                inner = _plan(hint, {}, by_alias, None)
                carries = inner is not None and bool(inner.categories)
            if carries:
                raise PolicyError(f"{tp.__name__}.{name}: a category inside a {kind}, whose "
                                  "keys cannot be judged or minimised (hint: make "
                                  f"{tp.__name__} a Pydantic model or a dataclass)")
    finally:
        _CHECKING.discard(tp)


_QUALIFIERS = frozenset(
    form for module in (typing, typing_extensions)
    for form in (getattr(module, name, None) for name in ("Required", "NotRequired", "ReadOnly"))
    if form is not None)
"""What may wrap a ``TypedDict`` key's type (``NotRequired[Annotated[str, Category(...)]]``)."""


def _unqualified(tp: Any) -> Any:
    """A ``TypedDict`` key's type with its qualifiers (``Required``, ``NotRequired``,
    ``ReadOnly``) taken off, inside an ``Annotated`` too."""
    while True:
        origin = get_origin(tp)
        if origin in _QUALIFIERS:
            tp = get_args(tp)[0]
        elif origin is typing.Annotated and get_origin(get_args(tp)[0]) in _QUALIFIERS:
            inner, *metadata = get_args(tp)
            tp = typing.Annotated[(get_args(inner)[0], *metadata)]
        else:
            return tp


def _refuse_generic(tp: Any, origin: type, args: Sequence[Any], by_alias: bool) -> None:
    """Refuse a generic dataclass or ``TypedDict`` given its types (``Box[Person]``) when it
    or its types carry a :class:`Category`, and a generic ``NamedTuple`` whose own fields
    do: Pydantic sends their fields, and no plan follows them (a Pydantic generic model is
    a model of its own; a ``NamedTuple``'s items are planned as a tuple's).

    Raises:
        PolicyError: ``tp`` is such a type.
    """
    if issubclass(origin, tuple) and hasattr(origin, "_fields"):
        _refuse_hidden(origin, by_alias)  # its own fields; its items are planned as a tuple's
        return
    if not (dataclasses.is_dataclass(origin) or is_typeddict(origin)):
        return
    carries = [plan.categories for plan in (_plan(t, {}, by_alias, None)
                                            for t in (origin, *args) if t is not Ellipsis)
               if plan is not None]
    carries += [(c.key,) for c in map(_value_category, args) if c is not None]
    if any(carries):
        raise PolicyError(f"{tp}: a generic {origin.__name__} given its types, whose fields "
                          "cannot be judged or minimised (hint: a Pydantic generic model, or "
                          f"{origin.__name__} with no type parameter)")


_ALIASES: tuple[type, ...] = tuple({
    alias for alias in (getattr(typing, "TypeAliasType", None),
                        getattr(typing_extensions, "TypeAliasType", None))
    if isinstance(alias, type)})
"""Type aliases (``type Contacts = list[Contact]``, ``TypeAliasType``): Pydantic sends a
value as the type the alias names."""
_EXPANDING: dict[int, bool] = {}
"""The aliases :func:`_aliased` is following, and whether each was met again inside itself."""


def _aliased(alias: Any, args: Sequence[Any], follow: Callable[[Any], _T | None],
             by_alias: bool) -> _T | None:
    """What ``follow`` finds in the type ``alias`` names (given ``args`` for its parameters).

    An alias met again inside itself is not followed there; one that holds itself and
    carries a category, or whose parameters are given types that carry one, is refused
    (no plan follows it).

    Raises:
        PolicyError: such an alias, or one naming something not defined.
    """
    key = id(alias)
    if key in _EXPANDING:
        _EXPANDING[key] = True
        return None
    _EXPANDING[key] = False
    try:
        value = alias.__value__
        try:
            module = vars(sys.modules[alias.__module__])
            value = typing._eval_type(  # type: ignore[attr-defined]  # forward references
                typing.ForwardRef(value) if isinstance(value, str) else value, module, None)
        except Exception as exc:  # a name not defined: what it holds is unknown
            raise PolicyError(f"{alias.__name__}: the type alias names something not defined "
                              f"({type(exc).__name__}), so its categories cannot be told") from None
        found = follow(value)
        carries = found is not None and (not isinstance(found, FieldPlan) or bool(found.categories))
        given = any(_value_category(a) is not None or _carries(a, by_alias) for a in args)
        if (carries and _EXPANDING[key]) or given:
            raise PolicyError(f"{alias.__name__}: a type alias that holds itself or is given "
                              "types, with a category in it, cannot be judged or minimised "
                              "(hint: a Pydantic model)")
        return found
    finally:
        del _EXPANDING[key]


def _carries(tp: Any, by_alias: bool) -> bool:
    plan = _plan(tp, {}, by_alias, None)
    return plan is not None and bool(plan.categories)


def _root_plan(tp: type, seen: Seen, by_alias: bool, stack: Stack) -> FieldPlan | None:
    """The plan of a Pydantic ``RootModel``: its root's, which is what it serialises."""
    info = getattr(tp, "model_fields", {}).get("root")
    if info is None:
        return None
    if _category(info.metadata) or _value_category(info.annotation):
        raise PolicyError(f"{tp.__name__}: the root model's value carries a category, so "
                          "the whole answer is one field (hint: a model with the value "
                          "as a categorised field)")
    return _plan(info.annotation, seen, by_alias, stack)


def _fields(tp: type, seen: Seen, by_alias: bool, stack: Stack) -> Iterable[FieldRule]:
    """The fields of a Pydantic model or a dataclass, each by the key it is sent under."""
    pydantic_fields = getattr(tp, "__pydantic_fields__", None)  # models and Pydantic dataclasses
    is_dataclass = dataclasses.is_dataclass(tp)
    if not isinstance(pydantic_fields, dict) and not is_dataclass:
        return
    if isinstance(pydantic_fields, dict) and getattr(tp, "__pydantic_complete__", True) is False:
        pydantic_fields = _rebuilt(tp)
    wire = _wire_names(tp) if by_alias else {}
    decorators = getattr(tp, "__pydantic_decorators__", None)
    coded = {field for decorator in getattr(decorators, "field_serializers", {}).values()
             for field in getattr(decorator.info, "fields", ())}
    every = "*" in coded or _encoded(tp)  # a serializer of every field (or by its type)
    if isinstance(pydantic_fields, dict):
        for name, info in pydantic_fields.items():
            category = _category(info.metadata)
            annotation = info.annotation
            if every or name in coded or _coded(info.metadata):
                try:
                    _refuse_coded(annotation, annotation, by_alias)
                except PolicyError as exc:
                    raise PolicyError(f"{tp.__name__}.{name}: {exc}") from None
            inner_cat = _value_category(annotation)
            yield FieldRule(wire.get(name) or name, _one(category, inner_cat, annotation),
                            _named(tp, name, annotation, seen, by_alias, stack))
    else:
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
        except Exception as exc:  # a name not defined (yet): what the field holds is unknown
            raise _unresolved(tp, exc) from None
        for f in dataclasses.fields(tp):
            annotation = hints.get(f.name, f.type)
            yield FieldRule(wire.get(f.name, f.name), _value_category(annotation),
                            _named(tp, f.name, annotation, seen, by_alias, stack))
    computed = getattr(decorators, "computed_fields", None)
    for name, decorator in (computed.items() if isinstance(computed, dict) else ()):
        returned = getattr(decorator.info, "return_type", None)  # serialised like a field
        if every or name in coded:
            try:
                _refuse_coded(returned, _strip(returned)[0], by_alias)
            except PolicyError as exc:
                raise PolicyError(f"{tp.__name__}.{name}: {exc}") from None
        yield FieldRule(wire.get(name) or name, _value_category(returned),
                        _named(tp, name, returned, seen, by_alias, stack))


def _rebuilt(tp: type) -> dict[str, Any]:
    """The fields of a model or Pydantic dataclass whose annotations name a type defined after
    it (a forward reference Pydantic has not resolved yet), resolved now.

    Raises:
        PolicyError: The name is still not defined.
    """
    from pydantic import BaseModel
    from pydantic.dataclasses import rebuild_dataclass

    try:  # the model's own namespaces, never this module's
        if issubclass(tp, BaseModel):
            tp.model_rebuild(_types_namespace={})
        else:
            rebuild_dataclass(tp, _types_namespace={})  # type: ignore[arg-type]
    except Exception as exc:
        raise _unresolved(tp, exc) from None
    fields: dict[str, Any] = getattr(tp, "__pydantic_fields__", {})
    return fields


def _unresolved(tp: type, exc: Exception) -> PolicyError:
    return PolicyError(f"{tp.__name__}: a field's type names something not defined "
                       f"({type(exc).__name__}), so its categories cannot be told (hint: "
                       f"define the models it names, then call {tp.__name__}.model_rebuild())")


def _wire_names(tp: type) -> dict[str, str]:
    """``{Python name: key}`` of the fields and computed fields Pydantic serialises by alias.

    Read from the type's own core schema, the serialiser's own description, so every
    way of setting an alias (``alias``, ``serialization_alias``, an alias generator,
    ``__pydantic_config__`` on a standard dataclass) is counted.

    Raises:
        PolicyError: Pydantic cannot describe how ``tp`` is serialised.
    """
    from pydantic import PydanticUserError, TypeAdapter

    try:
        schema: Any = TypeAdapter(tp).core_schema
    except (PydanticUserError, TypeError, ValueError) as exc:
        raise PolicyError(f"{tp.__name__}: cannot tell the keys it is serialised under "
                          f"({type(exc).__name__})") from None
    stack: list[Any] = [schema]
    while stack:  # the type's own node, wherever its definitions put it
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("cls") is tp and node.get("type") in ("model", "dataclass"):
                break
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    else:
        raise PolicyError(f"{tp.__name__}: cannot tell the keys it is serialised under")
    while isinstance(node, dict) and node.get("type") not in ("model-fields", "dataclass-args"):
        node = node.get("schema")
    if not isinstance(node, dict):
        raise PolicyError(f"{tp.__name__}: cannot tell the keys it is serialised under")
    fields = node.get("fields", {})
    pairs = fields.items() if isinstance(fields, dict) else ((f["name"], f) for f in fields)
    wire: dict[str, str] = {str(name): str(field.get("serialization_alias") or name)
                            for name, field in pairs}
    for computed in node.get("computed_fields") or ():
        name = str(computed["property_name"])
        wire[name] = str(computed.get("alias") or name)
    return wire


def _named(tp: type, name: str, annotation: Any, seen: Seen, by_alias: bool,  # noqa: PLR0917
           stack: Stack) -> FieldPlan | None:
    """The plan of field ``name`` of ``tp``; a refusal names the field."""
    try:
        return _plan(annotation, seen, by_alias, stack)
    except PolicyError as exc:
        raise PolicyError(f"{tp.__name__}.{name}: {exc}") from None


def _value_category(tp: Any) -> Category | None:
    """The category of a field's value: its own, or the one a union's member, a list's
    items or a dict's keys or values carry (the field is then withheld whole)."""
    tp, category = _strip(tp)
    if category is not None:
        return _one(category, _value_category(tp), tp)
    if isinstance(tp, _ALIASES):
        return _aliased(tp, (), _value_category, True)
    origin = get_origin(tp)
    if isinstance(origin, _ALIASES):
        return _aliased(origin, get_args(tp), _value_category, True)
    if origin is None:
        return None
    # every argument: a union's members, the items, and a mapping's keys (sent as text)
    # as well as its values
    args = [a for a in get_args(tp) if a is not type(None) and a is not Ellipsis]
    if not (origin in (Union, types.UnionType, list, tuple, set, frozenset, dict)
            or _is_sequence(origin) or _is_mapping(origin)):
        return None
    found = {c.key: c for c in map(_value_category, args) if c is not None}
    if len(found) > 1:
        raise PolicyError(f"a field of type {tp} holds values of {len(found)} categories "
                          f"({', '.join(found)}); give it one")
    return next(iter(found.values()), None)


def _one(outer: Category | None, inner: Category | None, tp: Any) -> Category | None:
    """A field's category, given on it (``outer``) and found in its value (``inner``).

    Raises:
        PolicyError: They differ: the inner one would be neither judged nor withheld.
    """
    if outer is not None and inner is not None and outer.key != inner.key:
        raise PolicyError(f"a field of type {tp} is given {outer.key} and holds values of "
                          f"{inner.key}; give it one (hint: the same Category, or a model)")
    return outer or inner


def _strip(tp: Any) -> tuple[Any, Category | None]:
    """``Annotated[T, ...]`` -> ``(T, its Category)``; a ``NewType`` is the type it names
    and a type variable the type Pydantic reads it as (Pydantic sends the value as that
    type's); other types as they are."""
    category: Category | None = None
    while True:
        if get_origin(tp) is typing.Annotated:
            args = get_args(tp)
            category = category or _category(args[1:])
            tp = args[0]
        elif isinstance(tp, typing.NewType):
            tp = tp.__supertype__
        elif isinstance(tp, TypeVar) and (read := _type_var(tp)) is not None:
            tp = read
        else:
            return tp, category


def _serialised_by_code(tp: Any) -> bool:
    """Whether an ``Annotated`` layer of ``tp`` serialises its value with a function of its
    own (``PlainSerializer``, ``WrapSerializer``)."""
    while get_origin(tp) is typing.Annotated:
        args = get_args(tp)
        if _coded(args[1:]):
            return True
        tp = args[0]
    return False


_LEAF_TYPES = (str, bytes, int, float, complex, decimal.Decimal, datetime.date, datetime.time,
               datetime.timedelta, uuid.UUID, enum.Enum, pathlib.PurePath)
"""Types whose ``json_encoders`` entry changes how a value is written, not which keys a
model sends."""


def _encoded(tp: type) -> bool:
    """Whether ``tp``'s ``json_encoders`` (Pydantic's config) name a type that is no leaf:
    a function that may send a model's values under keys of its choosing."""
    config = getattr(tp, "model_config", None) or getattr(tp, "__pydantic_config__", None)
    encoders = config.get("json_encoders") if isinstance(config, dict) else None
    return any(not (isinstance(key, type) and issubclass(key, _LEAF_TYPES))
               for key in encoders or ())


def _coded(metadata: Sequence[Any]) -> bool:
    from pydantic.functional_serializers import PlainSerializer, WrapSerializer

    return any(isinstance(m, (PlainSerializer, WrapSerializer)) for m in metadata)


def _refuse_coded(written: Any, tp: Any, by_alias: bool) -> None:
    """Refuse a serialiser function over a value whose keys carry categories: it may send
    them under any key, or as text no plan describes.

    Raises:
        PolicyError: ``written`` is such a type.
    """
    plan = _plan(tp, {}, by_alias, None)
    if plan is not None and plan.categories:
        raise PolicyError(f"{_type_name(tp)} carries {', '.join(plan.categories)} and is sent "
                          "by a serializer function, whose keys cannot be judged or minimised "
                          "(hint: a Pydantic model with the keys it sends, or a Category on "
                          "the field itself)")


def _type_var(tp: Any) -> Any:
    """What Pydantic sends a type variable left without its type as (a generic model used
    bare): its default, else its constraints, else its bound; None for a free one (``Any``)."""
    has_default = getattr(tp, "has_default", None)
    if has_default is not None and has_default():
        return tp.__default__
    if tp.__constraints__:
        return Union[tp.__constraints__]  # noqa: UP007 - a tuple of types
    bound = tp.__bound__
    if isinstance(bound, typing.ForwardRef):  # bound="Node": read in the variable's module
        try:
            module = vars(sys.modules[tp.__module__])
            bound = typing._eval_type(bound, module, None)  # type: ignore[attr-defined]
        except Exception as exc:
            raise PolicyError(f"{tp.__name__}: the type variable's bound names something not "
                              f"defined ({type(exc).__name__}), so its categories cannot be "
                              "told") from None
    return bound


def _category(metadata: Sequence[Any]) -> Category | None:
    found = [m for m in metadata if isinstance(m, Category)]
    if len(found) > 1:
        raise PolicyError(f"a field carries {len(found)} categories "
                          f"({', '.join(c.key for c in found)}); give it one")
    return found[0] if found else None


def _merge(plans: list[FieldPlan | None], *, nullable: bool = False) -> FieldPlan | None:
    """One plan for a value that may be any of several types (a union, a tuple); a None
    among ``plans`` is a type with no plan (a ``str``): such a value may stand there too."""
    present = [plan for plan in plans if plan is not None]
    if not present:
        return None
    nullable = nullable or any(plan.nullable for plan in present)
    scalars = len(present) < len(plans) or any(plan.scalars for plan in present)
    if len(present) == 1:
        one = present[0]
        if (one.nullable, one.scalars) == (nullable, scalars):
            return one
        return dataclasses.replace(one, nullable=nullable, scalars=scalars)
    rules: dict[str, FieldRule] = {}
    for plan in present:
        for rule in plan.rules:
            old = rules.get(rule.name)
            if old is None:
                rules[rule.name] = rule
            elif old != rule:
                category = old.category or rule.category
                inner = _merge([old.inner, rule.inner])
                if (old.category and rule.category and old.category != rule.category):
                    raise PolicyError(f"field {rule.name!r} has two categories in a union "
                                      f"({old.category.key}, {rule.category.key})")
                rules[rule.name] = FieldRule(rule.name, category, inner)
    return FieldPlan(tuple(rules.values()), closed=any(plan.closed for plan in present),
                     nullable=nullable, scalars=scalars)


def _is_sequence(origin: Any) -> bool:
    """Whether Pydantic sends a value of ``origin`` as a list of its items: any iterable
    (``Sequence``, ``AbstractSet``, ``Iterable``, a deque) but a string or a mapping."""
    return isinstance(origin, type) and issubclass(origin, Iterable) and not issubclass(
        origin, (str, bytes, Mapping))


def _is_mapping(origin: Any) -> bool:
    return isinstance(origin, type) and issubclass(origin, Mapping)


def route_fields(
    declared: tuple[str, ...], mode: str, route: Any, template: str
) -> tuple[tuple[str, ...], FieldPlan | None]:
    """A guarded route's categories and field plan, from its declaration and response model.

    Args:
        declared: The categories given to ``guarded()`` (empty: from the model).
        mode: ``deny`` or ``minimise``.
        route: The framework's route (FastAPI's ``APIRoute`` has ``response_model``).
        template: The route's path template, for messages.

    Raises:
        PolicyError: The declared categories disagree with the model's, neither
            names any, or a minimise route's model carries none.
    """
    model = getattr(route, "response_model", None)
    by_alias = getattr(route, "response_model_by_alias", True) is not False
    plan = plan_for(model, by_alias=by_alias) if model is not None else None
    where = f"{template} ({getattr(getattr(route, 'endpoint', None), '__name__', 'route')})"
    loose = _open_keys(model) if model is not None and mode != "minimise" else None
    if loose is not None:
        raise PolicyError(f"guarded() on {where}: {loose}, whose keys beyond its fields a "
                          "deny route would send unjudged (hint: extra='ignore' or 'forbid' "
                          "and no model_serializer, a field for each key, or mode='minimise', "
                          "which removes them)")
    if plan is None:
        if mode == "minimise":
            raise PolicyError(f"guarded(mode='minimise') on {where}: the response model has "
                              "no field with a Category (hint: Annotated[str, "
                              "Category('contact.email')])")
        if not declared:
            raise PolicyError(f"guarded() on {where} names no categories and its response "
                              "model carries none (hint: categories=[...] or Category fields)")
        return declared, None
    derived = plan.categories
    if declared and set(declared) != set(derived):
        raise PolicyError(f"guarded() on {where}: categories {', '.join(declared)} disagree "
                          f"with the response model's {', '.join(derived)} (hint: leave "
                          "categories out to use the model's)")
    return (declared or derived), plan


def _open_keys(model: Any) -> str | None:
    """What makes a model inside ``model`` send keys beyond its fields (``extra="allow"``,
    a ``model_serializer``, a type Pydantic cannot describe), or None."""
    from pydantic import PydanticUserError, TypeAdapter

    try:
        schema: Any = TypeAdapter(model).core_schema
    except (PydanticUserError, TypeError, ValueError) as exc:  # FastAPI refuses it first
        return f"{model}: Pydantic cannot describe what it sends ({exc.__class__.__name__})"
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            config, cls = node.get("config"), node.get("cls")
            name = cls.__name__ if isinstance(cls, type) else str(node.get("model_name",
                                                                           "a model"))
            if (node.get("extra_behavior") == "allow" or (
                    isinstance(config, dict) and config.get("extra_fields_behavior") == "allow")):
                return f"{name} allows extra keys"
            if node.get("type") in ("model", "dataclass") and "serialization" in node:
                return f"{name} serialises itself (model_serializer)"
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return None


def withheld_optional(schema: _T) -> _T:
    """Drop every removable field from the ``required`` lists of a JSON schema or OpenAPI document.

    A field whose category may be withheld with :data:`REMOVE` is absent from a
    minimised response, so no schema may promise it. Walks the whole document
    (components, ``$defs``, nested objects) and changes it in place; FastAPI
    keeps the document it built, so ``withheld_optional(app.openapi())`` once at
    start-up fixes what ``/openapi.json`` serves.

    Args:
        schema: A decoded JSON schema or OpenAPI document.

    Returns:
        ``schema`` itself.
    """
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        properties = node.get("properties")
        required = node.get("required")
        if isinstance(properties, dict) and isinstance(required, list):
            kept = [name for name in required if not (
                isinstance(properties.get(name), dict)
                and properties[name].get("x-withheld") == "removed")]
            if len(kept) != len(required):
                if kept:
                    node["required"] = kept
                else:
                    del node["required"]
        stack.extend(node.values())
    return schema
