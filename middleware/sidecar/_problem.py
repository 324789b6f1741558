"""problem+json answers the sidecar gives itself: bad gateway, malformed input, forbidden asks."""

from __future__ import annotations

import json

from starlette.responses import Response

from middleware.problem import PROBLEM_MEDIA_TYPE

_TYPE_BASE = "urn:purpose-guard:problem:"

AMBIGUOUS_TARGET = (
    "origin-form targets only: no fragment, dot or empty segment, ';' parameter, space, "
    "control or raw non-ASCII character, nor an encoded / \\ . % ; ? # or control character"
)
"""What a refused request target may not contain (docs/sidecar.md says the same)."""


def sidecar_problem(
    status: int, code: str, title: str, detail: str | None = None, decision_id: str | None = None
) -> Response:
    """A problem+json response for a failure that is not a policy denial.

    Args:
        status: HTTP status.
        code: Short machine-readable code, e.g. ``upstream_unavailable``.
        title: One human-readable line.
        detail: What exactly went wrong, when it helps the caller.
        decision_id: The audited decision this answer belongs to, if any.
    """
    body: dict[str, object] = {
        "type": _TYPE_BASE + code,
        "title": title,
        "status": status,
        "reason": code,
    }
    if detail:
        body["detail"] = detail
    headers = {"cache-control": "no-store"}
    if decision_id:
        body["decision_id"] = decision_id
        headers["x-guard-decision-id"] = decision_id
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=headers,
        media_type=PROBLEM_MEDIA_TYPE,
    )
