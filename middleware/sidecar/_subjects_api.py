"""The subject register over HTTP, for a rights-request system (POLICY-SPEC §4).

- ``POST /v1/subjects/entries``: record an entry (caller granted ``write`` on
  ``rights.request``);
- ``POST /v1/subjects/lookup``: a subject's entries and what is in force
  (``read`` on ``rights.request``);
- ``POST /v1/filter``: which of many subjects a request may use, each allowed one
  audited, one batch id (``read`` on ``rights.request``).

Subject ids travel only in request bodies, never in URLs (which access logs keep).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import date
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from guard._errors import AuditUnavailableError, GuardError
from guard._types import Action, Decision, HttpContext, Reason, Request, denial
from guard.policy import CompiledPolicy
from guard.rights import Change, EntryKind, RegisterRefusedError
from guard.rights._filter import filter_subjects
from middleware._bounds import read_limited
from middleware._enforce import _policy_version
from middleware.identity import Caller, IdentityError
from middleware.sidecar._decide_api import SubjectId, _Key
from middleware.sidecar._problem import sidecar_problem
from middleware.sidecar._refuse import refuse_unauthenticated
from middleware.sidecar._state import Sidecar, peer_of

RIGHTS_PURPOSE = "rights.request"
ENTRIES_PATH = "/v1/subjects/entries"
LOOKUP_PATH = "/v1/subjects/lookup"
FILTER_PATH = "/v1/filter"
PATHS = frozenset({ENTRIES_PATH, LOOKUP_PATH, FILTER_PATH})
MAX_BODY = 1 << 20
MAX_FILTER = 10_000
_Subject = SubjectId  # the rule for a subject in a path (pydantic refuses surrogates too)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: object) -> object:
    """A date only as the document gives it (``YYYY-MM-DD``), never a number or date-time."""
    if not (isinstance(value, str) and _ISO_DATE.fullmatch(value)):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


class EntryIn(BaseModel):
    """A register entry to record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: _Subject = Field(description="The data subject's id (stored only as a pseudonym).")
    kind: EntryKind = Field(description="What to record.")
    purpose: _Key | None = Field(
        default=None, description="Purpose or grouping node (consents and objections).")
    effective: Annotated[date, BeforeValidator(_iso_date)] | None = Field(
        default=None, description="The end date (end_of_relationship only).")
    ref: str = Field(default="", max_length=500,
                     description="A ticket, or the legal reason (required to override an "
                                 "objection or refuse an erasure).")


class EntryOut(BaseModel):
    """A recorded register entry."""

    subject: str = Field(description="The subject's pseudonym.")
    seq: int
    entry_id: str
    kind: str
    purpose: str | None
    effective: str
    recorded_at: str
    recorded_by: str
    ref: str | None
    event_id: str = Field(description="Id of the entry's audit event.")


class LookupIn(BaseModel):
    """The subject to read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: _Subject


class LookupOut(BaseModel):
    """A subject's register history and the entries in force."""

    subject: str
    entries: list[EntryOut]
    in_force: list[str] = Field(description="The entries in force, as decision rules.")


class FilterIn(BaseModel):
    """One request asked for many subjects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    caller: _Key = Field(description="The caller the bulk work is done for.")
    purpose: _Key
    categories: list[_Key] = Field(min_length=1, max_length=100)
    action: Action = Action.READ
    subjects: list[_Subject] = Field(min_length=1, max_length=MAX_FILTER)


class FilterOut(BaseModel):
    """The subjects the request may use, in the order asked; each is an audited decision."""

    batch_id: str
    allowed: list[str]


MODELS: tuple[type[BaseModel], ...] = (EntryIn, EntryOut, LookupIn, LookupOut, FilterIn,
                                       FilterOut)


def holds(policy: CompiledPolicy, caller: str, purpose: str, action: Action) -> bool:
    """Whether ``caller`` holds an ``action`` grant on ``purpose`` (or a parent of it)."""
    grants = policy.grants.get((caller, purpose), {})
    return any(granted_action == action.value for _, granted_action in grants)


def _json(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode(), status_code=status,
                    media_type="application/json", headers={"cache-control": "no-store"})


async def _admitted(
    request: HttpRequest, action: Action, model: type[BaseModel]
) -> tuple[Sidecar, Caller, Any] | Response:
    """Authenticate, authorise on rights.request, parse the body; or the refusal.

    A verified asker refused (its token's ``purposes`` claim leaves out rights.request,
    or the policy grants it no such action there) is recorded, as every refusal of a
    verified caller is.
    """
    sidecar: Sidecar = request.app.state.sidecar
    try:
        asker = sidecar.auth.authenticate(request.headers, peer_of(request.scope))
    except IdentityError as exc:
        return await refuse_unauthenticated(sidecar, request.scope, exc, request.scope["path"])
    if not asker.may_declare(RIGHTS_PURPOSE):
        decision_id = await _refused(sidecar, request, asker.id, action, "token_purposes")
        return sidecar_problem(403, Reason.PURPOSE_NOT_GRANTED.value, "Not permitted",
                               f"the token's purposes claim leaves out {RIGHTS_PURPOSE}",
                               decision_id=decision_id)
    if not holds(sidecar.holder.current, asker.id, RIGHTS_PURPOSE, action):
        decision_id = await _refused(sidecar, request, asker.id, action, "rights_request")
        return sidecar_problem(403, "rights_request_not_granted", "Not permitted",
                               f"{asker.id} holds no {action.value} grant on {RIGHTS_PURPOSE}",
                               decision_id=decision_id)
    try:
        body = await read_limited(request, MAX_BODY)
    except ClientDisconnect:
        return sidecar_problem(400, Reason.MALFORMED_REQUEST.value, "The body was cut short")
    if body is None:
        return sidecar_problem(413, Reason.MALFORMED_REQUEST.value, "Request body too large")
    try:
        parsed = model.model_validate(json.loads(body))
    except (ValueError, RecursionError) as exc:  # the latter: nested past the parser's depth
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            detail = f"{'.'.join(str(p) for p in first['loc']) or 'body'}: {first['msg']}"
        else:
            detail = f"not JSON: {exc}"
        return sidecar_problem(400, Reason.MALFORMED_REQUEST.value, "Malformed request", detail)
    return sidecar, asker, parsed


async def _refused(sidecar: Sidecar, request: HttpRequest, asker: str, action: Action,  # noqa: PLR0917
                   why: str, purpose: str = RIGHTS_PURPOSE) -> str | None:
    """Record a verified asker's refusal (``purpose_not_granted``, rule
    ``check:purpose_not_granted:<why>``, status 403); its event id, None if unrecorded."""
    asked = Request(asker, purpose, (), action)
    decision = denial(Reason.PURPOSE_NOT_GRANTED, asked, _policy_version(sidecar.guard), why)
    http = HttpContext(method="POST", route=request.scope["path"], status=403)
    checked = await sidecar.guard.arecord_denial(asked, decision, http)
    return checked.decision_id or None


async def record_entry(request: HttpRequest) -> Response:
    """``POST /v1/subjects/entries``: check, audit, store and enforce one entry."""
    admitted = await _admitted(request, Action.WRITE, EntryIn)
    if isinstance(admitted, Response):
        return admitted
    sidecar, caller, entry_in = admitted
    asker = caller.id
    change = Change(entry_in.subject, entry_in.kind, entry_in.purpose or "", entry_in.effective,
                    entry_in.ref, asker)
    try:
        entry = await asyncio.to_thread(sidecar.guard.record_subject_change, change)
    except RegisterRefusedError as exc:
        return sidecar_problem(422, "register_refused", "Register entry refused", str(exc))
    except AuditUnavailableError:
        return sidecar_problem(503, Reason.AUDIT_UNAVAILABLE.value,
                               "The entry could not be recorded")
    return _json(entry.to_dict(), 201)


async def lookup(request: HttpRequest) -> Response:
    """``POST /v1/subjects/lookup``: the subject's history and what is in force.

    A read of what is recorded about the subject: it is an audited decision (the asker,
    ``rights.request``, the subject, detail ``register_lookup``), durable before the
    answer, or the answer is a 503.
    """
    admitted = await _admitted(request, Action.READ, LookupIn)
    if isinstance(admitted, Response):
        return admitted
    sidecar, caller, lookup_in = admitted
    asker = caller.id
    register = sidecar.guard.register
    if register is None:
        return sidecar_problem(503, Reason.INTERNAL_ERROR.value, "No subject register")
    asked = Request(asker, RIGHTS_PURPOSE, (), Action.READ, lookup_in.subject)
    read = Decision(True, Reason.ALLOWED, (), (), ("check:rights_request:read",),
                    _policy_version(sidecar.guard), asker, RIGHTS_PURPOSE, Action.READ)
    http = HttpContext(method="POST", route=LOOKUP_PATH, status=200)
    durable = await asyncio.to_thread(sidecar.guard.record_decisions, [(asked, read)],
                                      detail="register_lookup", http=http)
    if not all(durable):
        return sidecar_problem(503, Reason.AUDIT_UNAVAILABLE.value,
                               "The look-up could not be recorded")
    try:
        entries = await asyncio.to_thread(register.history, lookup_in.subject)
    except GuardError:  # the store unreachable, or a row the guard never wrote (its path
        return sidecar_problem(503, Reason.AUDIT_UNAVAILABLE.value,  # stays off the answer)
                               "The register could not be read")
    state = register.lookup(lookup_in.subject) or ()
    return _json({"subject": register.pseudonym(lookup_in.subject),
                  "entries": [e.to_dict() for e in entries],
                  "in_force": [r.rule for r in state]})


async def filter_endpoint(request: HttpRequest) -> Response:
    """``POST /v1/filter``: the subjects a request may use, each allowed one audited."""
    admitted = await _admitted(request, Action.READ, FilterIn)
    if isinstance(admitted, Response):
        return admitted
    sidecar, caller, filter_in = admitted
    asker = caller.id
    if filter_in.caller == asker and not caller.may_declare(filter_in.purpose):
        # for itself the asker declares the purpose: its token's claim binds, as at /v1/decide
        decision_id = await _refused(sidecar, request, asker, filter_in.action,
                                     "token_purposes", filter_in.purpose)
        return sidecar_problem(403, Reason.PURPOSE_NOT_GRANTED.value, "Not permitted",
                               f"the token's purposes claim leaves out {filter_in.purpose}",
                               decision_id=decision_id)
    template = Request(filter_in.caller, filter_in.purpose, tuple(filter_in.categories),
                       filter_in.action)
    batch_id = uuid.uuid4().hex
    http = HttpContext(method="POST", route=FILTER_PATH, extra={"asker": asker})

    def run() -> list[str]:
        return list(filter_subjects(sidecar.guard, template, filter_in.subjects,
                                    batch_id=batch_id, asker=asker, http=http))

    allowed = await asyncio.to_thread(run)
    return _json({"batch_id": batch_id, "allowed": allowed})


def routes() -> list[BaseRoute]:
    """The register API's routes, for the sidecar's Starlette app."""
    return [
        Route(ENTRIES_PATH, record_entry, methods=["POST"]),
        Route(LOOKUP_PATH, lookup, methods=["POST"]),
        Route(FILTER_PATH, filter_endpoint, methods=["POST"]),
    ]


def _body(model: str) -> dict[str, Any]:
    return {"required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}}}


def _ok(description: str, model: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model}"}}}}


def openapi_paths(problem: Any) -> dict[str, Any]:
    """The register API's paths for the OpenAPI document (``problem(description)``)."""
    common = {
        "400": problem("Malformed JSON or a body that does not fit the schema."),
        "401": problem("No valid caller identity."),
        "403": problem("The caller holds no grant of this action on rights.request, or its "
                       "token's purposes claim leaves rights.request out (recorded)."),
        "413": problem("Body too large."),
    }
    return {
        ENTRIES_PATH: {"post": {
            "summary": "Record a subject-register entry (write on rights.request)",
            "operationId": "record_subject_entry", "tags": ["subjects"],
            "security": [{"bearer": []}], "requestBody": _body("EntryIn"),
            "responses": {"201": _ok("Recorded, audited and in force.", "EntryOut"),
                          **common,
                          "422": problem("Refused (reason register_refused); nothing "
                                         "recorded."),
                          "503": problem("The audit trail could not record it.")},
        }},
        LOOKUP_PATH: {"post": {
            "summary": "A subject's register history and entries in force (read on "
                       "rights.request)",
            "operationId": "lookup_subject", "tags": ["subjects"],
            "security": [{"bearer": []}], "requestBody": _body("LookupIn"),
            "responses": {"200": _ok("The history (the look-up is an audited decision).",
                                     "LookupOut"), **common,
                          "503": problem("The audit trail could not record the look-up.")},
        }},
        FILTER_PATH: {"post": {
            "summary": "The subjects a request may use (read on rights.request)",
            "operationId": "filter_subjects", "tags": ["subjects"],
            "security": [{"bearer": []}], "requestBody": _body("FilterIn"),
            "responses": {"200": _ok("Allowed subjects, in the order asked; each an audited "
                                     "decision with detail 'batch:ID asker:CALLER'.",
                                     "FilterOut"),
                          **common},
        }},
    }
