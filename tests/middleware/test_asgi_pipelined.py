"""HTTP/1.1 pipelining behind a held read, on a real uvicorn (h11 and httptools).

A client may send its next requests on a connection before the first answer
arrived. While the first read's decision is being committed its response is
held; these tests show, over loopback, that no byte of any answer reaches the
pipelining client before the decision it carries is durable, that the answers
come back in the order asked, each the answer to its own request (its body, its
decision id, its audit event's subject), and that the second request's answer
is held for its own decision in turn. uvicorn runs one request of a connection
at a time: the next one is read only when the previous response is complete,
which the hold makes wait for durability.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tokenkit import Keys, UvicornThread, audit_rows, guard_settings

from guard._errors import AuditUnavailableError
from guard._guard import Guard
from guard.audit import load_hmac_key, pseudonymise
from guard.audit._jtrail import JournalTrail
from middleware import GuardMiddleware, RouteTable, guarded


class OneByOne:
    """The writer's journal, each append waiting for its own ``admit`` (one at a time)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Semaphore(0)
        self.admitted = threading.Semaphore(0)
        self.durable: list[bytes] = []

    def append(self, payloads: Sequence[bytes]) -> int:
        self.entered.release()
        if not self.admitted.acquire(timeout=30):
            raise AuditUnavailableError("the test never admitted the append")
        offset: int = self.inner.append(payloads)
        self.durable.extend(payloads)
        return offset

    def is_durable(self, event_id: str) -> bool:
        return any(event_id.encode() in payload for payload in self.durable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(params=["h11", "httptools"])
def served(request: pytest.FixtureRequest, keys: Keys, tmp_path: Path
           ) -> Iterator[tuple[UvicornThread, OneByOne]]:
    settings = guard_settings(tmp_path, keys)
    guard = Guard.from_settings(settings)
    trail = guard.trail
    assert isinstance(trail, JournalTrail)
    journal = OneByOne(trail.writer.journal)
    trail.writer.journal = journal  # type: ignore[assignment]

    @guarded(categories=["contact"], action="read", subject="customer_id")
    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"phone of {request.path_params['customer_id']}")

    app = Starlette(routes=[Route("/customers/{customer_id}", read)])
    app.add_middleware(GuardMiddleware, guard=guard, settings=settings, routes=RouteTable(()))
    try:
        with UvicornThread(app, http=request.param) as server:
            yield server, journal
    finally:
        for _ in range(8):
            journal.admitted.release()
        guard.close()


def _request(path: str, token: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nhost: svc\r\nauthorization: Bearer {token}\r\n"
            "x-purpose: relationship.management\r\n\r\n").encode()


class _Reader:
    """Responses read off one connection, one whole response at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def nothing_within(self, seconds: float) -> bool:
        """True when no byte arrives within ``seconds`` (the connection stays open)."""
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return True
        self.buffer += chunk
        return False

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next whole response: status, headers (lower-case names), body."""
        self.sock.settimeout(30)
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines)}
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk


async def _wait(semaphore: threading.Semaphore) -> None:
    assert await asyncio.to_thread(semaphore.acquire, True, 30)


@pytest.mark.anyio
async def test_pipelined_reads_get_their_own_answers_each_once_durable(
    served: tuple[UvicornThread, OneByOne], keys: Keys, tmp_path: Path
) -> None:
    server, journal = served
    token = keys.mint("ec", sub="svc:crm")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_request("/customers/c-0001", token) + _request("/customers/c-0002", token))
        reader = _Reader(sock)
        await _wait(journal.entered)  # the first read's decision is being committed
        assert reader.nothing_within(0.5)  # no byte of any answer before it is durable
        journal.admitted.release()
        first = await asyncio.to_thread(reader.response)
        await _wait(journal.entered)  # only now is the second request's decision committed
        assert journal.is_durable(first[1]["x-guard-decision-id"])
        assert reader.nothing_within(0.5)  # the second answer waits for its own decision
        journal.admitted.release()
        second = await asyncio.to_thread(reader.response)
        assert reader.nothing_within(0.2)  # two requests, two answers
    assert [(s, b) for s, _, b in (first, second)] == [(200, b"phone of c-0001"),
                                                       (200, b"phone of c-0002")]
    ids = [r[1]["x-guard-decision-id"] for r in (first, second)]
    assert all(journal.is_durable(i) for i in ids)
    hmac_key = load_hmac_key(tmp_path / "subject-hmac.key")
    for decision_id, customer in zip(ids, ["c-0001", "c-0002"], strict=True):
        [row] = audit_rows(tmp_path / "audit.db", "event_id = ?", (decision_id,))
        assert (row["kind"], row["http_status"]) == ("decision", 200)
        assert row["subject"] == pseudonymise(hmac_key, customer)
