"""A minimising route's response: buffered (bounded), filtered to the released fields, sent.

Anything that cannot be filtered is refused, never passed: a body over the bound,
a body that is not JSON, a compressed one or a part of one (``206``, ``Content-Range``)
gets a 403 problem+json (``internal_error``) in place of the handler's response.

Nothing of the answer may depend on a withheld value: the request reaches the app (or
upstream) without the headers that ask for a part of the body or make the answer
depend on a validator of the whole body (:data:`UNFILTERABLE_REQUEST`), and the answer
leaves without the validators and digests of the body before it was minimised
(:data:`WHOLE_BODY`), nor, when no body comes (``HEAD``), a length other than 0.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.types import Message, Receive, Scope, Send

from guard._types import Reason
from middleware.fields import FieldPlan
from middleware.problem import problem_response

__all__ = ["DEFAULT_MAX_BODY", "Minimiser", "minimise_json"]

_log = logging.getLogger("guard.middleware")
DEFAULT_MAX_BODY = 1024 * 1024
"""The largest response body a minimising route may send (bytes)."""


UNFILTERABLE_REQUEST = frozenset({b"range", b"if-range", b"if-none-match", b"if-match",
                                  b"if-modified-since", b"if-unmodified-since"})
"""Request headers that would make the answer a part of the body, or a 304/412 decided on a
validator of the whole body (an oracle for a withheld value): never passed on."""
WHOLE_BODY = frozenset({b"etag", b"content-md5", b"digest", b"content-digest", b"repr-digest",
                        b"content-range"})
"""Answer headers that describe the body before it was minimised: never sent."""


class BodyError(ValueError):
    """The response body cannot be minimised (not JSON, compressed, too large)."""


def minimise_json(body: bytes, plan: FieldPlan, released: frozenset[str]) -> bytes:
    """A JSON body with the fields of withheld categories removed or masked.

    Raises:
        BodyError: ``body`` is not JSON, or is nested deeper than it can be read.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # orjson refuses integers beyond 64 bits; the standard parser does not
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:  # nested past the parser's depth: the
            raise BodyError("the response body is not JSON") from exc  # latter, not a ValueError
    if plan.closed and not isinstance(value, (dict, list)) and not plan.fits(value):
        raise BodyError("the response body is not the JSON object its route names")
    try:
        out = plan.minimise(value, released)
        try:
            return orjson.dumps(out)
        except TypeError:
            return json.dumps(out, separators=(",", ":")).encode()
    except RecursionError as exc:
        raise BodyError("the response body is nested too deep") from exc


def _is_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """A JSON media type and no content encoding."""
    media = b""
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            return False
        if lower == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class Minimiser:
    """An ASGI ``send`` that buffers the response and sends it minimised.

    Args:
        send: The ``send`` to forward to.
        scope: The request's scope (for a refusal's response).
        receive: The request's ``receive`` (for a refusal's response).
        plan: Which fields carry which category.
        released: The categories the caller may receive.
        limit: The largest body accepted, in bytes.
        decision_id: The decision's audit id (named in a refusal).
        purpose: The declared purpose (named in a refusal).
        route: The route template (logged with a refusal; never the raw path).
        opened: Makes the decision durable with the status about to be sent and
            returns its id (a read recorded when its response starts); a refusal
            names that id.
    """

    __slots__ = ("_chunks", "_decision_id", "_limit", "_opened", "_over", "_plan", "_purpose",
                 "_receive", "_released", "_route", "_scope", "_send", "_size", "_start",
                 "refused")

    def __init__(self, send: Send, scope: Scope, receive: Receive, plan: FieldPlan,
                 released: frozenset[str], *, limit: int, decision_id: str | None,
                 purpose: str | None, route: str,
                 opened: Callable[[int], Awaitable[str | None]] | None = None) -> None:
        self._send = send
        headers = scope.get("headers")
        if headers:  # before the app or the upstream reads them (``_`` read as ``-``, as
            # WSGI, Django and many upstreams read a name: If_None_Match is If-None-Match)
            scope["headers"] = [(name, value) for name, value in headers
                                if name.lower().replace(b"_", b"-") not in UNFILTERABLE_REQUEST]
        self._opened = opened
        self._route = route
        self._scope = scope
        self._receive = receive
        self._plan = plan
        self._released = released
        self._limit = limit
        self._decision_id = decision_id
        self._purpose = purpose
        self._start: Message | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._over = False
        self.refused = False
        """True once the body was refused (403 sent in its place)."""

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message
            return
        if kind != "http.response.body" or self._start is None:
            # Nothing else may carry a body past the filter (a file path, trailers).
            if kind.startswith("http.response."):
                self._over = True
                return
            await self._send(message)
            return
        body: bytes = message.get("body", b"")
        if not self._over:
            self._size += len(body)
            if self._size > self._limit:
                self._over = True
                self._chunks.clear()
            else:
                self._chunks.append(body)
        if message.get("more_body", False):
            return
        await self._finish()

    async def _finish(self) -> None:
        start = self._start
        assert start is not None
        if self._over:
            await self._refuse("the response body is over the bound or not a plain body")
            return
        body = b"".join(self._chunks)
        headers: list[tuple[bytes, bytes]] = list(start.get("headers", ()))
        if start.get("status") == 206 or any(n.lower() == b"content-range" for n, _ in headers):
            await self._refuse("the response is a part of a body")
            return
        headers = [(n, v) for n, v in headers if n.lower() not in WHOLE_BODY
                   and (body or n.lower() != b"content-length" or v.strip() == b"0")]
        if body:
            if not _is_json(headers):
                await self._refuse("the response is not uncompressed JSON")
                return
            try:
                body = minimise_json(body, self._plan, self._released)
            except BodyError as exc:
                await self._refuse(str(exc))
                return
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
        await self._send({**start, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def _refuse(self, why: str) -> None:
        self.refused = True
        _log.error("minimising route %s refused: %s", self._route, why)
        decision_id = self._decision_id
        if self._opened is not None:
            decision_id = await self._opened(403)
        response = problem_response(403, Reason.INTERNAL_ERROR, self._purpose, (), decision_id)
        if decision_id:  # the middleware adds it to every response
            del response.headers["x-guard-decision-id"]
        await response(self._scope, self._receive, self._send)

