"""``application/problem+json`` bodies (RFC 9457) for 401 and 403 answers.

A denial says which check refused (the reason code) and nothing else of the
policy: no rule lines, no grants, no lawful basis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from starlette.responses import Response

from guard._types import Reason

__all__ = ["PROBLEM_MEDIA_TYPE", "problem_body", "problem_response"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "urn:purpose-guard:problem:"

_TITLES: dict[Reason, str] = {
    Reason.UNKNOWN_CALLER: "Caller not known to the policy",
    Reason.UNKNOWN_PURPOSE: "Purpose missing or unknown",
    Reason.UNKNOWN_CATEGORY: "Data category unknown",
    Reason.SPECIAL_CATEGORY: "Special category data is never processed",
    Reason.PURPOSE_NOT_GRANTED: "Purpose not granted to this caller",
    Reason.CATEGORY_NOT_IN_PURPOSE: "Data category outside the declared purpose",
    Reason.CATEGORY_NOT_GRANTED: "Data category not granted to this caller",
    Reason.TRANSFER_NOT_SAFEGUARDED: "Transfer abroad not safeguarded",
    Reason.CONSENT_REQUIRED: "Consent required",
    Reason.MALFORMED_REQUEST: "Malformed request",
    Reason.ROUTE_NOT_DECLARED: "Route not declared",
    Reason.UNAUTHENTICATED: "Caller identity missing or invalid",
    Reason.AUDIT_UNAVAILABLE: "Audit trail unavailable",
    Reason.INTERNAL_ERROR: "The guard could not judge this request",
}


def problem_body(
    status: int,
    reason: Reason,
    purpose: str | None,
    categories: Sequence[str],
    decision_id: str | None,
) -> dict[str, object]:
    """The problem document for a denial."""
    return {
        "type": _TYPE_BASE + reason.value,
        "title": _TITLES.get(reason, "Access denied"),
        "status": status,
        "reason": reason.value,
        "purpose": purpose or None,
        "categories": list(categories),
        "decision_id": decision_id,
    }


def problem_response(
    status: int,
    reason: Reason,
    purpose: str | None,
    categories: Sequence[str],
    decision_id: str | None,
) -> Response:
    """A ready-to-send problem+json response (401 carries ``WWW-Authenticate``)."""
    body = json.dumps(
        problem_body(status, reason, purpose, categories, decision_id), separators=(",", ":")
    ).encode()
    headers = {"cache-control": "no-store"}
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="purpose-guard"'
    if decision_id:
        headers["x-guard-decision-id"] = decision_id
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)
