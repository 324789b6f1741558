"""uvicorn's HTTP/1.1 protocol for ``guard sidecar``: every request of a connection hears it
close, and bytes that are no HTTP/1.1 request get a recorded problem+json 400.

uvicorn tells only the newest request of a connection that the client went
away. A client that pipelines a second request behind one whose answer still
streams, then hangs up, leaves the first one sending into the void, and the
proxy reading its upstream's stream for as long as it lasts (one of
``upstream_max_connections`` held, for good if the stream never ends). Here
each request a connection replaced while it was still answering is told too.

uvicorn's proxy headers (on by default when uvicorn is run by hand) would make a
client's ``X-Forwarded-For`` and ``X-Forwarded-Proto`` the peer and scheme the
sidecar believes and forwards: this protocol leaves them out, so the peer is
always the connection's.

uvicorn answers what its parser refuses (both ``Content-Length`` and
``Transfer-Encoding``, a coding other than ``chunked``, an obs-fold...) with a
plain-text 400 of its own, before any app sees the request. Here that refusal
is what the guard answers for any request it cannot judge: a ``malformed_request``
denial recorded in the audit trail and a problem+json 400 with its id, the
connection closed. Bytes refused in the body of a request whose head the app
refuses for its framing (``Transfer-Encoding: xchunked``) are that refusal's:
the app's ``request_framing`` event and answer are the only ones.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from middleware.sidecar._framing import framing_ok

HTTP_PROTOCOL = "middleware.sidecar._server:SidecarHttpProtocol"
"""The ``http`` option ``guard sidecar`` gives uvicorn (an import string, for its workers too)."""

_log = logging.getLogger("guard.sidecar")

LINGER_SECONDS = 1.0
"""How long a refused connection's remaining bytes are read and dropped before it closes."""

HEAD_LIMIT = 64 << 10
"""The most bytes a request's head may take past the read that began it: httptools sets no
bound, so a client sending one endless header line grew the connection's memory without end."""


class SidecarHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a lost connection is told to every request still answering,
    and a request the parser refuses is a recorded problem+json 400."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = _without_proxy_headers(self.app)
        self._replaced: list[RequestResponseCycle] = []
        self._refusal: asyncio.Task[None] | None = None
        self._answered: asyncio.Event | None = None  # set as an answer ends (or the connection)
        self._dropping = False  # what the client sends is read and dropped until the close
        self._in_body: RequestResponseCycle | None = None  # the request whose body is read
        self._head: int | None = None  # bytes read into the head under way (None: no head)

    def on_message_begin(self) -> None:
        self._head = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head = None
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > HEAD_LIMIT:  # the parser's error: refused below as bytes it cannot read
            raise ValueError("the request head is too large")
        earlier = self.cycle
        super().on_headers_complete()
        if earlier is not None and earlier is not self.cycle and not earlier.response_complete:
            self._replaced = [c for c in self._replaced if not c.response_complete]
            self._replaced.append(earlier)
        self._in_body = self.cycle if self.cycle is not earlier else None

    def on_message_complete(self) -> None:
        self._in_body = None
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        for cycle in self._replaced:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        self._replaced = []
        super().connection_lost(exc)
        if self._answered is not None:
            self._answered.set()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._answered is not None:
            self._answered.set()

    def data_received(self, data: bytes) -> None:
        if self._dropping:
            return  # what follows bytes already refused is read and dropped until the close
        head = self._head
        super().data_received(data)
        if head is not None and self._head is not None:  # a head still growing: bounded
            self._head += len(data)
            if self._head > HEAD_LIMIT and not self._dropping:
                self.send_400_response("the request head is too large")

    def send_400_response(self, msg: str) -> None:
        """Refuse what the parser could not read: recorded, then answered (see the module)."""
        sidecar = _sidecar_of(self.app)
        if sidecar is None:  # not the sidecar's app: uvicorn's own answer
            super().send_400_response(msg)
            return
        if self._dropping:
            return
        self._dropping = True
        cycle = self._in_body
        if cycle is not None and not framing_ok(cycle.scope["headers"]):
            # The app refuses this request for its framing and records that: its answer is
            # the refusal. Its body ends here (the app reads none of it).
            cycle.more_body = False
            cycle.message_event.set()
            return
        self.transport.pause_reading()
        self._refusal = self.loop.create_task(self._refuse(sidecar))

    async def _refuse(self, sidecar: Any) -> None:
        from middleware.sidecar._refuse import refuse_unparsed

        try:
            response = await refuse_unparsed(sidecar, self.client[0] if self.client else None)
            head = [b"HTTP/1.1 400 Bad Request"]
            head += [b"%s: %s" % pair for pair in self.server_state.default_headers]
            head += [b"%s: %s" % pair for pair in response.raw_headers]
            head.append(b"connection: close")
            wire = b"\r\n".join(head) + b"\r\n\r\n" + bytes(response.body)
        except Exception as exc:  # recorded or not, the request is refused
            _log.error("a request the parser refused could not be recorded: %s",
                       type(exc).__name__)
            wire = b""
        cycle = self.cycle
        if cycle is not None and cycle.more_body:
            # The refused bytes were to be this request's body: it ends here, unanswered
            # (as if its client left; a proxied one is recorded as such).
            cycle.disconnected = True
            cycle.message_event.set()
        # The requests read whole before these bytes are answered first, never cut into.
        while ((cycle := self.cycle) is not None and not cycle.response_complete
               and not cycle.disconnected and not self.transport.is_closing()):
            self._answered = asyncio.Event()
            await self._answered.wait()
        transport = self.transport
        if transport.is_closing():
            return
        if not wire:
            transport.close()
            return
        transport.write(wire)
        # A close with unread bytes in the socket resets the connection, and the client may
        # lose the answer: the rest of what it sent is read (and dropped) for a moment first.
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:  # the client already left (reset): nothing more to say or read
                transport.close()
                return
        transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, transport.close)


def _without_proxy_headers(app: Any) -> Any:
    """``app`` without uvicorn's proxy-headers layer: the peer and scheme are the connection's.

    uvicorn (by default for loopback peers, for everyone with ``--forwarded-allow-ips
    '*'``) takes the client's address and scheme from ``X-Forwarded-For`` and
    ``X-Forwarded-Proto``; the sidecar would then believe a client's claim and pass
    it upstream as its own ``X-Forwarded-For`` and ``X-Forwarded-Proto``.
    """
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    if isinstance(app, ProxyHeadersMiddleware):
        return app.app
    return app


def _sidecar_of(app: Any) -> Any:
    """The :class:`Sidecar` behind uvicorn's app (under its wrappers), or None."""
    from middleware.sidecar._app import SidecarApp

    for _ in range(8):
        if isinstance(app, SidecarApp):
            return app.sidecar
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
