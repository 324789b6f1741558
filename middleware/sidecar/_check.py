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

from middleware._enforce import enforce
from middleware.sidecar._headers import judged_headers
from middleware.sidecar._paths import CHECK_METHODS, judgeable_method, judgeable_path
from middleware.sidecar._problem import AMBIGUOUS_TARGET
from middleware.sidecar._refuse import refuse_target
from middleware.sidecar._state import Sidecar, peer_of

CALLER_HEADER = "x-guard-caller"
PURPOSE_HEADER = "x-guard-purpose"
DECISION_HEADER = "x-guard-decision-id"
VERSION_HEADER = "x-guard-policy-version"
_CALLER, _PURPOSE, _VERSION, _DECISION = (
    name.encode() for name in (CALLER_HEADER, PURPOSE_HEADER, VERSION_HEADER, DECISION_HEADER))


def _target(scope: Scope, headers: Headers, prefix: str) -> tuple[str, str] | None:
    """(method, raw target) of the original request, or None when the check names none.

    nginx's ``X-Original-URI`` is ``$request_uri``: the target exactly as the
    client sent it and as nginx forwards it, fragment and all; it is judged as
    given (see :func:`judgeable_path`), never cut at ``#`` or ``?`` first.
    """
    path: str = scope["path"]
    if len(path) > len(prefix) + 1:
        # Envoy: the original path follows the prefix; its own method is the original.
        raw = (scope.get("raw_path") or path.encode()).decode("latin-1")
        if not raw.startswith(prefix + "/"):
            return scope["method"], ""  # the prefix itself was percent-encoded: refused
        query = scope.get("query_string", b"")
        target = raw[len(prefix) :] + ("?" + query.decode("latin-1") if query else "")
        return scope["method"], target
    uris: list[bytes] = []
    methods: list[bytes] = []
    for key, value in headers.raw:  # one pass for both (lower-case names, as ASGI gives them)
        if key == b"x-original-uri":
            uris.append(value)
        elif key == b"x-original-method":
            methods.append(value)
    if not uris:
        return None
    if len(uris) > 1:
        return scope["method"], ""  # two targets: neither can be the one forwarded
    method = methods[0].decode("latin-1") if len(methods) == 1 else "" if methods else (
        scope["method"])
    return method, uris[0].decode("latin-1")


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
        headers = judged_headers(scope, self._purpose_header)
        if scope["method"] not in CHECK_METHODS:
            refused = await refuse_target(
                sidecar,
                scope,
                headers,
                method=None,
                detail="check requests use " + ", ".join(CHECK_METHODS),
                status=405,
            )
            refused.headers["allow"] = ", ".join(CHECK_METHODS)
            await refused(scope, receive, send)
            return
        target = _target(scope, headers, self._prefix)
        if target is None:
            refused = await refuse_target(
                sidecar,
                scope,
                headers,
                method=None,
                detail="send X-Original-URI (nginx) or append the original path to the check "
                "path (Envoy)",
            )
            await refused(scope, receive, send)
            return
        raw_method, raw = target
        method = judgeable_method(raw_method)
        path = judgeable_path(raw)
        if method is None or path is None:
            detail = AMBIGUOUS_TARGET if method else "X-Original-Method: an upper-case token"
            refused = await refuse_target(sidecar, scope, headers, method=method, detail=detail)
            await refused(scope, receive, send)
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
            filters=False,  # the body goes past the sidecar: a minimise route is judged whole
        )
        denied = outcome.problem()
        if denied is not None:
            await denied(scope, receive, send)
            return
        out = [(b"cache-control", b"no-store"), (b"content-length", b"0")]
        decision = outcome.decision
        if decision is not None:
            out += [
                (_CALLER, decision.caller.encode("latin-1")),
                (_PURPOSE, decision.purpose.encode("latin-1")),
                (_VERSION, decision.policy_version.encode("latin-1")),
            ]
        if outcome.decision_id:
            out.append((_DECISION, outcome.decision_id.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": b""})
