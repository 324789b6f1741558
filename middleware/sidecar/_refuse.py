"""Request targets the guard refuses to judge: a 400 problem+json that is an audit event too."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from guard._types import HttpContext, Reason, Request, denial
from middleware._bounds import MAX_METHOD, MAX_PURPOSE, cut, method_ok
from middleware._enforce import _policy_version, _refuse, http_context
from middleware.identity import IdentityError
from middleware.problem import problem_response
from middleware.sidecar._framing import AMBIGUOUS_FRAMING
from middleware.sidecar._problem import sidecar_problem
from middleware.sidecar._state import Sidecar, peer_of

UNPARSED = AMBIGUOUS_FRAMING + ", no obs-fold, no blank before a colon"
"""What the server's parser refuses besides malformed lines (told to the client)."""
REFUSED_ROUTE = "<refused>"
"""The audited route of a refused target (never the raw target: it may name a person)."""


async def refuse_target(
    sidecar: Sidecar,
    scope: Scope,
    headers: Headers,
    *,
    method: str | None,
    detail: str,
    status: int = 400,
    what: str = "target",
) -> Response:
    """Record a ``malformed_request`` denial for a target the guard cannot judge.

    The event names the caller when the request proves one, the purpose as
    declared (cut to 200 characters), the method (cut to 32 characters) and
    the route ``<refused>``; the answer is a problem+json with its id.

    Args:
        sidecar: The sidecar's shared parts.
        scope: The ASGI scope of the refused request.
        headers: Its headers as the guard judges them.
        method: The original method, or None when it is itself malformed.
        detail: What was wrong, for the client.
        status: 400, or 405 for a check request with a method no proxy sends.
        what: What was refused: ``target`` (the event's detail ``request_target``)
            or ``framing`` (``request_framing``: the body could be read two ways).
    """
    peer = peer_of(scope)
    try:
        caller = sidecar.auth.authenticate(headers, peer).id
    except IdentityError:
        caller = ""
    purpose = headers.get(sidecar.settings.identity.purpose_header, "")[:MAX_PURPOSE]
    request = Request(caller=caller, purpose=purpose, categories=())
    version = _policy_version(sidecar.guard)
    decision = denial(Reason.MALFORMED_REQUEST, request, version, detail="request_" + what)
    # A server may hand over a method of any length (uvicorn's h11 takes 15,000 characters):
    # stored cut to its bound, as enforce() stores it.
    shown = "-" if not method else method if method_ok(method) else cut(method, MAX_METHOD)
    http = HttpContext(method=shown, route=REFUSED_ROUTE, status=status)
    checked = await sidecar.guard.arecord_denial(request, decision, http, source=peer or "-")
    return sidecar_problem(
        status,
        Reason.MALFORMED_REQUEST.value,
        f"Request {what} refused",
        detail,
        decision_id=checked.decision_id or None,
    )


async def refuse_unparsed(sidecar: Sidecar, peer: str | None = None) -> Response:
    """Record a ``malformed_request`` denial for bytes that are no HTTP/1.1 request.

    The server's parser refused them (two framings, a coding other than
    ``chunked``, an obs-fold, a space before a colon...): nothing of the request
    is known or believed, so the event names no caller or purpose, the method
    ``-`` and the route ``<refused>``, with ``detail`` ``request_syntax``.

    Args:
        sidecar: The sidecar's shared parts.
        peer: The client's address, as the server saw it.
    """
    request = Request(caller="", purpose="", categories=())
    decision = denial(Reason.MALFORMED_REQUEST, request, _policy_version(sidecar.guard),
                      detail="request_syntax")
    http = HttpContext(method="-", route=REFUSED_ROUTE, status=400)
    checked = await sidecar.guard.arecord_denial(request, decision, http, source=peer or "-")
    return sidecar_problem(400, Reason.MALFORMED_REQUEST.value, "Request refused",
                           "not a well-formed HTTP/1.1 request; " + UNPARSED,
                           decision_id=checked.decision_id or None)


async def refuse_unauthenticated(sidecar: Sidecar, scope: Scope, exc: IdentityError,
                                 route: str) -> Response:
    """The 401 of an API request that proves no caller, refused and recorded as the
    enforcement points refuse one (one by one up to the bound per source, then counted:
    ``audit.anonymous_refusals_*``).

    Args:
        sidecar: The sidecar's shared parts.
        scope: The ASGI scope of the refused (POST) request.
        exc: Why the identity check failed (a refused caller header names its peer).
        route: The API path, as audited.
    """
    by = None if exc.asserted_by is None else "peer:" + exc.asserted_by
    outcome = await _refuse(sidecar.guard, 401, Reason.UNAUTHENTICATED,
                            Request(caller="", purpose="", categories=()),
                            http_context("POST", route), caller=None, detail=str(exc), by=by,
                            source=peer_of(scope) or "-")
    return problem_response(401, Reason.UNAUTHENTICATED, None, (), outcome.decision_id)
