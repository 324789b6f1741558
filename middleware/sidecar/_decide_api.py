"""``POST /v1/decide``: ask for one decision or a batch, JSON in and out, every one audited."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from guard._guard import Checked
from guard._subject_rule import MAX_SUBJECT, SUBJECT_PATTERN
from guard._types import Action, HttpContext, Reason, Request, denial
from middleware._bounds import read_limited
from middleware._enforce import _policy_version
from middleware.identity import Caller, IdentityError
from middleware.sidecar._problem import sidecar_problem
from middleware.sidecar._refuse import refuse_unauthenticated
from middleware.sidecar._state import Sidecar, peer_of

MAX_BATCH = 1000
MAX_BODY = 1 << 20
"""The largest decide body read (1 MiB: a full batch of 1,000 requests fits several times)."""
_Key = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")]
SubjectId = Annotated[str, Field(min_length=1, max_length=MAX_SUBJECT, pattern=SUBJECT_PATTERN)]
"""A data subject's id in a request body: the rule for a subject in a path, 1 to 128
characters (no control character, blank, separator or anything a log line or another
reading could be made of)."""


class DecideRequest(BaseModel):
    """One access request put to the guard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    caller: _Key | None = Field(
        default=None,
        description="Caller to judge; defaults to the authenticated caller of this API.",
    )
    purpose: _Key = Field(description="Declared purpose, e.g. relationship.management.")
    categories: list[_Key] = Field(min_length=1, max_length=100, description="Data categories.")
    action: Action = Field(default=Action.READ, description="read or write.")
    subject: SubjectId | None = Field(
        default=None,
        description="Data subject id (pseudonymised in the audit): 1 to 128 characters "
        "from A-Z a-z 0-9 - . _ ~ : @, not '.' or '..'.",
    )


class DecideBatch(BaseModel):
    """Several access requests, judged independently, answered in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    requests: list[DecideRequest] = Field(min_length=1, max_length=MAX_BATCH)


class DecisionOut(BaseModel):
    """A decision as the engine made it (POLICY-SPEC §3)."""

    allowed: bool
    reason: str
    caller: str
    purpose: str
    categories: list[str]
    action: str
    lawful_basis: list[str]
    rule: list[str]
    policy_version: str
    party_type: str | None
    country: str | None


class DecideResult(BaseModel):
    """One decision and the id of its audit event."""

    decision_id: str
    decision: DecisionOut


class DecideBatchResult(BaseModel):
    """The decisions of a batch, in the order asked."""

    results: list[DecideResult]


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    reason: str | None = None
    detail: str | None = None
    decision_id: str | None = None


def _parse(body: bytes) -> DecideRequest | DecideBatch:
    try:
        data: Any = json.loads(body)
    except RecursionError as exc:  # not a ValueError: the parser's depth, passed
        raise ValueError("nested too deep") from exc
    if isinstance(data, dict) and "requests" in data:
        return DecideBatch.model_validate(data)
    return DecideRequest.model_validate(data)


def _too_large() -> Response:
    """413 problem+json; the connection is closed rather than drained of the rest."""
    response = sidecar_problem(
        413,
        Reason.MALFORMED_REQUEST.value,
        "Request body too large",
        f"the body may be at most {MAX_BODY} bytes",
    )
    response.headers["connection"] = "close"
    return response


def _readable(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


async def _check(sidecar: Sidecar, request: Request, http: HttpContext, asker: Caller
                 ) -> Checked:
    """Decide and record ``request``; asked about another caller, the event names the asker.

    Asked about itself, the asker declares the purpose: outside its token's ``purposes``
    claim that is a recorded ``purpose_not_granted`` denial, as at the other endpoints.
    """
    if request.caller == asker.id and not asker.may_declare(request.purpose):
        decision = denial(Reason.PURPOSE_NOT_GRANTED, request, _policy_version(sidecar.guard),
                          "token_purposes")
        return await sidecar.guard.arecord_denial(request, decision, http)
    ruling = sidecar.guard.decide(request, http)
    if request.caller != asker.id and ruling.fields is not None:
        ruling.fields["detail"] = f"asker:{asker.id}"
    return await sidecar.guard.acommit(ruling)


async def _not_permitted(sidecar: Sidecar, asker: Caller, item: DecideRequest) -> Response:
    """403 for a question about another caller from an asker not in ``decide_askers``, recorded
    as the asker's refused request (its purpose, categories and subject; ``detail``
    ``about:<caller>``), as every refusal of a verified caller is."""
    asked = Request(asker.id, item.purpose, tuple(item.categories), item.action, item.subject)
    decision = denial(Reason.PURPOSE_NOT_GRANTED, asked, _policy_version(sidecar.guard),
                      "decide_askers")
    http = HttpContext(method="POST", route="/v1/decide", status=403)
    checked = await sidecar.guard.arecord_denial(asked, decision, http,
                                                 detail=f"about:{item.caller}")
    return sidecar_problem(403, "asker_not_permitted", "Not permitted to ask about another caller",
                           f"{asker.id} may only ask about itself (sidecar.decide_askers)",
                           decision_id=checked.decision_id or None)


async def decide_endpoint(request: HttpRequest) -> Response:
    """Authenticate the asker, judge each request (audited), answer with the decisions."""
    sidecar: Sidecar = request.app.state.sidecar
    try:
        asker = sidecar.auth.authenticate(request.headers, peer_of(request.scope))
    except IdentityError as exc:
        return await refuse_unauthenticated(sidecar, request.scope, exc, "/v1/decide")
    try:
        body = await read_limited(request, MAX_BODY)
    except ClientDisconnect:
        return sidecar_problem(400, Reason.MALFORMED_REQUEST.value, "The body was cut short")
    if body is None:
        return _too_large()
    try:
        parsed = _parse(body)
    except ValueError as exc:  # JSON errors and ValidationError alike
        detail = _readable(exc) if isinstance(exc, ValidationError) else f"not JSON: {exc}"
        return sidecar_problem(400, Reason.MALFORMED_REQUEST.value, "Malformed request", detail)
    items = parsed.requests if isinstance(parsed, DecideBatch) else [parsed]
    may_ask_others = asker.id in sidecar.settings.sidecar.decide_askers
    for item in items:
        if item.caller not in (None, asker.id) and not may_ask_others:
            return await _not_permitted(sidecar, asker, item)
    http = HttpContext(method="POST", route="/v1/decide", extra={"asker": asker.id})
    checked = await asyncio.gather(
        *(
            _check(
                sidecar,
                Request(
                    caller=item.caller or asker.id,
                    purpose=item.purpose,
                    categories=tuple(item.categories),
                    action=item.action,
                    subject=item.subject,
                ),
                http,
                asker,
            )
            for item in items
        )
    )
    results: list[dict[str, object]] = [
        {"decision_id": c.decision_id, "decision": c.decision.to_dict()} for c in checked
    ]
    out = {"results": results} if isinstance(parsed, DecideBatch) else results[0]
    return Response(
        json.dumps(out, separators=(",", ":")).encode(),
        media_type="application/json",
        headers={"cache-control": "no-store"},
    )
