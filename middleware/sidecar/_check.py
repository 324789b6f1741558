"""The check endpoint for nginx ``auth_request`` and Envoy's HTTP ext_authz.

nginx sends a sub-request to ``/v1/check`` with the original method and URI
in ``X-Original-Method`` / ``X-Original-URI``. Envoy sends the original method
to ``/v1/check`` followed by the original path. Either way the answer is 200
with the caller and decision id in headers (the proxy copies them upstream),
401 or 403 with a problem+json body.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from guard._types import Reason
from middleware._enforce import enforce
from middleware.sidecar._paths import judgeable_path
from middleware.sidecar._problem import ambiguous_path, sidecar_problem
from middleware.sidecar._state import Sidecar, peer_of

CALLER_HEADER = "x-guard-caller"
PURPOSE_HEADER = "x-guard-purpose"
DECISION_HEADER = "x-guard-decision-id"
VERSION_HEADER = "x-guard-policy-version"


def _target(scope: Scope, headers: Headers, prefix: str) -> tuple[str, str] | None:
    """(method, raw target) of the original request, or None when the check names none."""
    path: str = scope["path"]
    if len(path) > len(prefix) + 1:
        # Envoy: the original path follows the prefix; its own method is the original.
        raw = (scope.get("raw_path") or path.encode()).decode("latin-1")
        query = scope.get("query_string", b"")
        target = raw[len(prefix) :] + ("?" + query.decode("latin-1") if query else "")
        return scope["method"], target
    uri = headers.get("x-original-uri")
    if not uri:
        return None
    return headers.get("x-original-method", scope["method"]).upper(), uri


class CheckEndpoint:
    """Pure ASGI endpoint: judge the original request a check request describes.

    Args:
        sidecar: The sidecar's shared parts.
    """

    __slots__ = ("_prefix", "_purpose_header", "_sidecar")

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar
        self._prefix = sidecar.settings.sidecar.check_path.rstrip("/")
        self._purpose_header = sidecar.settings.identity.purpose_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sidecar = self._sidecar
        headers = Headers(scope=scope)
        target = _target(scope, headers, self._prefix)
        if target is None:
            await sidecar_problem(
                400,
                Reason.MALFORMED_REQUEST.value,
                "Malformed check request",
                "send X-Original-URI (nginx) or append the original path to the check path (Envoy)",
            )(scope, receive, send)
            return
        method, raw = target
        path = judgeable_path(raw)
        if path is None:
            await ambiguous_path()(scope, receive, send)
            return
        outcome = await enforce(
            sidecar.guard,
            sidecar.auth,
            sidecar.routes,
            method=method,
            path=path,
            headers=headers,
            peer=peer_of(scope),
            purpose_header=self._purpose_header,
        )
        denied = outcome.problem()
        if denied is not None:
            await denied(scope, receive, send)
            return
        out = [(b"cache-control", b"no-store"), (b"content-length", b"0")]
        decision = outcome.decision
        if decision is not None:
            out += [
                (CALLER_HEADER.encode(), decision.caller.encode("latin-1")),
                (PURPOSE_HEADER.encode(), decision.purpose.encode("latin-1")),
                (VERSION_HEADER.encode(), decision.policy_version.encode("latin-1")),
            ]
        if outcome.decision_id:
            out.append((DECISION_HEADER.encode(), outcome.decision_id.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": b""})
