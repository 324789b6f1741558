"""uvicorn's HTTP/1.1 protocol for ``guard sidecar``: every request of a connection hears it close.

uvicorn tells only the newest request of a connection that the client went
away. A client that pipelines a second request behind one whose answer still
streams, then hangs up, leaves the first one sending into the void, and the
proxy reading its upstream's stream for as long as it lasts (one of
``upstream_max_connections`` held, for good if the stream never ends). Here
each request a connection replaced while it was still answering is told too.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

HTTP_PROTOCOL = "middleware.sidecar._server:SidecarHttpProtocol"
"""The ``http`` option ``guard sidecar`` gives uvicorn (an import string, for its workers too)."""


class SidecarHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a lost connection is told to every request still answering."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._replaced: list[RequestResponseCycle] = []

    def on_headers_complete(self) -> None:
        earlier = self.cycle
        super().on_headers_complete()
        if earlier is not None and earlier is not self.cycle and not earlier.response_complete:
            self._replaced = [c for c in self._replaced if not c.response_complete]
            self._replaced.append(earlier)

    def connection_lost(self, exc: Exception | None) -> None:
        for cycle in self._replaced:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        self._replaced = []
        super().connection_lost(exc)
