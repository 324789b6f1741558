"""The request, the decision and the vocabulary they share (POLICY-SPEC §3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import TypeVar

_T = TypeVar("_T")


def quick_init(cls: type[_T]) -> type[_T]:
    """Give a frozen slots dataclass an ``__init__`` that sets each slot through its descriptor.

    A frozen dataclass's own ``__init__`` sets every field with
    ``object.__setattr__``; calling each slot's descriptor does the same in about
    half the instructions, which counts for the few objects built on every
    request. The parameters and defaults are the dataclass's; instances stay
    frozen, equal, hashable and picklable as before.

    Args:
        cls: A ``@dataclass(frozen=True, slots=True)`` class whose fields all take
            plain defaults (no ``default_factory``, keyword-only field or
            ``__post_init__``).

    Raises:
        TypeError: ``cls`` is not such a class.
    """
    params = getattr(cls, "__dataclass_params__", None)
    if (params is None or not params.frozen or "__slots__" not in cls.__dict__
            or hasattr(cls, "__post_init__")):
        raise TypeError(f"{cls.__name__} is not a frozen slots dataclass without __post_init__")
    env: dict[str, object] = {}
    signature: list[str] = []
    body: list[str] = []
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not MISSING or f.kw_only or not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain fields and defaults")
        env[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        if f.default is MISSING:
            signature.append(f.name)
        else:
            env[f"_default_{f.name}"] = f.default
            signature.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _set_{f.name}(self, {f.name})")
    # Field names are the class's own identifiers: the text is built as dataclasses builds it.
    exec(f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body), env)  # noqa: S102
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    init.__module__ = cls.__module__
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses a method assignment
    return cls


class Action(StrEnum):
    """What the caller wants to do with the data."""

    READ = "read"
    WRITE = "write"


class Reason(StrEnum):
    """Why a decision came out as it did, in the order the checks run."""

    UNKNOWN_CALLER = "unknown_caller"
    UNKNOWN_PURPOSE = "unknown_purpose"
    UNKNOWN_CATEGORY = "unknown_category"
    SPECIAL_CATEGORY = "special_category"
    PURPOSE_NOT_GRANTED = "purpose_not_granted"
    CATEGORY_NOT_IN_PURPOSE = "category_not_in_purpose"
    CATEGORY_NOT_GRANTED = "category_not_granted"
    TRANSFER_NOT_SAFEGUARDED = "transfer_not_safeguarded"
    CONSENT_REQUIRED = "consent_required"
    RETENTION_EXPIRED = "retention_expired"
    ERASURE_REQUESTED = "erasure_requested"
    PROCESSING_RESTRICTED = "processing_restricted"
    OBJECTION_RECORDED = "objection_recorded"
    ALLOWED = "allowed"
    # Raised outside the ordered checks; all are denials.
    MALFORMED_REQUEST = "malformed_request"
    ROUTE_NOT_DECLARED = "route_not_declared"
    UNAUTHENTICATED = "unauthenticated"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    INTERNAL_ERROR = "internal_error"
    DENIED_BY_MODEL = "denied_by_model"  # slow path: a model the compiler does not know


@quick_init
@dataclass(frozen=True, slots=True)
class Request:
    """One access request: who, for which declared purpose, which data, which action.

    Args:
        caller: The proven caller id, e.g. ``svc:crm``.
        purpose: The declared purpose key, e.g. ``relationship.management``.
        categories: The data categories the request touches (at least one).
        action: ``read`` or ``write``.
        subject: The raw data-subject id, if the request concerns one person.
    """

    caller: str
    purpose: str
    categories: tuple[str, ...]
    action: Action = Action.READ
    subject: str | None = None


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    """The guard's answer to a request, with everything an auditor needs to know why.

    Args:
        allowed: True only when every category passed every check.
        reason: The first check that failed, or ``allowed``.
        categories: The categories judged.
        lawful_basis: The lawful bases of the declared purpose (empty if unknown).
        rule: The rule lines that granted (``rules.csv:57``) or the check that
            refused (``check:transfer_not_safeguarded``).
        policy_version: Digest of model.conf and rules.csv.
        caller: The caller judged.
        purpose: The declared purpose judged.
        action: The action judged.
        party_type: The caller's party type, when the caller is known.
        country: The caller's jurisdiction, when the caller is known.
    """

    allowed: bool
    reason: Reason
    categories: tuple[str, ...]
    lawful_basis: tuple[str, ...]
    rule: tuple[str, ...]
    policy_version: str
    caller: str = ""
    purpose: str = ""
    action: Action = Action.READ
    party_type: str | None = None
    country: str | None = None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping of the decision."""
        return {
            "allowed": self.allowed,
            "reason": self.reason.value,
            "caller": self.caller,
            "purpose": self.purpose,
            "categories": list(self.categories),
            "action": self.action.value,
            "lawful_basis": list(self.lawful_basis),
            "rule": list(self.rule),
            "policy_version": self.policy_version,
            "party_type": self.party_type,
            "country": self.country,
        }


def denial(
    reason: Reason,
    request: Request | None = None,
    policy_version: str = "",
    detail: str | None = None,
) -> Decision:
    """A denial raised outside the ordered checks (malformed, unauthenticated, ...)."""
    return Decision(
        allowed=False,
        reason=reason,
        categories=request.categories if request else (),
        lawful_basis=(),
        rule=(f"check:{reason.value}" if detail is None else f"check:{reason.value}:{detail}",),
        policy_version=policy_version,
        caller=request.caller if request else "",
        purpose=request.purpose if request else "",
        action=request.action if request else Action.READ,
    )


@dataclass(frozen=True, slots=True)
class HttpContext:
    """The HTTP side of a decision, when an enforcement point made it."""

    method: str
    route: str
    status: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    aborted: bool = False
    """The response was cut short after its status was sent (an outcome's ``detail``)."""
