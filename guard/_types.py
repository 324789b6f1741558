"""The request, the decision and the vocabulary they share (POLICY-SPEC §3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


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
