"""Review of request framing through the sidecar: one body, framed one way, judged once.

A request whose body could be framed two ways (``Content-Length`` beside
``Transfer-Encoding``, a coding other than one ``chunked``, two lengths) is
refused, never forwarded: a 400 problem+json ``malformed_request`` recorded as a
denial on the route ``<refused>``, the connection closed. That holds under the
HTTP/1.1 server ``guard sidecar`` runs (uvicorn's httptools protocol, which
refuses such a request before the app sees it) and under a lenient one (uvicorn's
h11 server, which reads a chunked body even when a length comes too). The upstream
is a raw TCP server that parses what it receives with httptools, as uvicorn would:
it must only ever see the one request the sidecar judged, with one framing and the
body the client sent.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sidecarkit import ServerThread, audit_rows, policy_copy, poll, sidecar_settings
from upstreamkit import ThreadedUpstream

from bench._pg import free_port
from middleware.sidecar._server import HTTP_PROTOCOL, SidecarHttpProtocol

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SMUGGLED = b"GET /customers/c-0042 HTTP/1.1\r\nHost: upstream\r\n\r\n"
CHUNKED = b"%x\r\n%b\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)


class _Message:
    """One request as an httptools server reads it."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""


class ParsingUpstream(ThreadedUpstream):
    """Parses each connection with httptools (as uvicorn would) and answers each request 200."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[_Message] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self.start()

    def handle(self, conn: socket.socket) -> None:
        upstream = self
        current: list[_Message] = []

        class Callbacks:
            def on_message_begin(self) -> None:
                current.append(_Message())

            def on_url(self, url: bytes) -> None:
                current[-1].url += url

            def on_header(self, name: bytes, value: bytes) -> None:
                current[-1].headers.append((name.lower(), value))

            def on_body(self, body: bytes) -> None:
                current[-1].body += body

            def on_message_complete(self) -> None:
                with upstream._lock:
                    upstream.messages.append(current[-1])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        parser = httptools.HttpRequestParser(Callbacks())
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                with self._lock:
                    self.errors.append(str(exc))
                return


class Served(NamedTuple):
    """A sidecar under one server, its upstream, its audit store and a token that may write."""

    server: ServerThread
    upstream: ParsingUpstream
    db: Path
    token: str
    kind: str  # "guard": the protocol guard sidecar runs; "h11": a lenient server


@pytest.fixture(scope="module", params=["guard", "h11"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, keys: Any
           ) -> Iterator[Served]:
    from middleware.sidecar import create_app

    tmp = tmp_path_factory.mktemp(f"framing-{request.param}")
    upstream = ParsingUpstream()
    policy = policy_copy(tmp / "policy", POLICIES)
    settings_ = sidecar_settings(tmp, policy, keys.identity(),
                                 upstream=f"http://127.0.0.1:{upstream.port}")
    # Many refusals from one client: each is asserted one by one (no count in their place).
    settings_.audit.anonymous_refusals_per_source = 0
    http = HTTP_PROTOCOL if request.param == "guard" else "h11"  # guard sidecar's, or h11
    try:
        with ServerThread(create_app(settings_), free_port(), http=http) as server:
            yield Served(server, upstream, tmp / "audit.db", keys.mint("hs", sub="svc:crm"),
                         request.param)
    finally:
        upstream.close()


class _Answer:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class _FirstAnswerRead(Exception):
    """Stops the parser at the end of the first answer (a second may be in the same bytes)."""


class _FirstAnswer(_Answer):
    def on_message_complete(self) -> None:
        self.done = True
        raise _FirstAnswerRead


def _first_answer(chunks: Iterator[bytes]) -> tuple[int, _Answer]:
    """The first answer in ``chunks`` (its status and parts), never one after it.

    A pipelined request's answer can arrive in the same read as the one before it: the
    parser is stopped where the first ends, so its status is the first answer's.
    """
    answer = _FirstAnswer()
    parser = httptools.HttpResponseParser(answer)
    for data in chunks:
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:
            break  # the first answer's end, or bytes no answer begins with
        if answer.done:
            break
    return parser.get_status_code(), answer


def _ask(port: int, request: bytes) -> tuple[int, _Answer]:
    """Send ``request``; the first answer (its status and parts)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        return _first_answer(iter(lambda: conn.recv(65536), b""))


def _request(token: str, framing: bytes, body: bytes) -> bytes:
    return (b"PUT /files/a HTTP/1.1\r\nHost: sidecar\r\nAuthorization: Bearer " + token.encode()
            + b"\r\nX-Purpose: relationship.management\r\n" + framing + b"\r\n" + body)


def _check_upstream(upstream: ParsingUpstream) -> None:
    """Every request the upstream read is one judged: one framing, the client's body (or none)."""
    assert upstream.errors == []
    for message in upstream.messages:
        assert message.url == b"/files/a"
        framing = [name for name, _ in message.headers
                   if name in (b"content-length", b"transfer-encoding")]
        assert len(framing) == 1, message.headers
        # the body as sent: decoded from its chunks, or the bytes a length named (none where
        # the server saw no framing header: what follows the head is then the next
        # "request", which the server refuses)
        assert message.body == SMUGGLED or any(sent.startswith(message.body)
                                               for sent in (SMUGGLED, CHUNKED))


def _refused(status: int, answer: _Answer) -> bool:
    """True for the sidecar's refusal: 400 problem+json ``malformed_request``."""
    import json

    if status != 400:
        return False
    assert answer.headers.get(b"content-type") == b"application/problem+json", answer.body
    assert json.loads(answer.body)["reason"] == "malformed_request"
    return True


# Header spellings an HTTP/1.1 server may read as a framing header, and values around them.
_TE_NAME = st.sampled_from([b"Transfer-Encoding", b"transfer-encoding", b"TRANSFER-ENCODING",
                            b"TrAnSfEr-EnCoDiNg", b"Transfer_Encoding", b"Transfer-Encoding "])
_TE_VALUE = st.sampled_from([b"chunked", b"CHUNKED", b"Chunked", b" chunked", b"chunked ",
                             b"\tchunked", b"chunked, identity", b"identity, chunked",
                             b"chunked,chunked", b"gzip, chunked", b"xchunked", b"chunked;x=1",
                             b"identity", b""])
_CL_NAME = st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH",
                            b"Content_Length", b"Content-Length "])
_CL_VALUE = st.sampled_from([b"0", b"<n>", b"<n>, <n>", b"0, <n>", b"+0", b"0, 0", b" 0", b"00",
                             b"-1", b"0x0"])  # <n>: the length of the body sent
_LINE = st.one_of(
    st.tuples(st.just("te"), _TE_NAME, _TE_VALUE),
    st.tuples(st.just("cl"), _CL_NAME, _CL_VALUE),
    st.tuples(st.just("fold"), _TE_NAME, _TE_VALUE),  # obs-fold: the value on a second line
)


def _framing(lines: list[tuple[str, bytes, bytes]]) -> bytes:
    out = b""
    for kind, name, value in lines:
        out += (name + b":\r\n " + value if kind == "fold" else name + b": " + value) + b"\r\n"
    return out


def _ambiguous(lines: list[tuple[str, bytes, bytes]]) -> bool:
    """Both framings named (by any name a server reads as one), two codings, or two lengths
    that differ (identical ones, on two lines or comma-joined, may be read as one, RFC 9110
    §8.6: h11 does, and forwards one)."""
    kinds = [kind for kind, name, _ in lines if b"_" not in name]
    te = sum(kind in ("te", "fold") for kind in kinds)
    lengths = {part.strip() for kind, name, value in lines if kind == "cl" and b"_" not in name
               for part in value.split(b",")}
    return (te > 0 and "cl" in kinds) or te > 1 or len(lengths) > 1


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(lines=[("te", b"Transfer-Encoding", b"chunked"), ("cl", b"Content-Length", b"0")])
@example(lines=[("cl", b"Content-Length", b"0"), ("te", b"Transfer-Encoding", b"chunked")])
@example(lines=[("te", b"Transfer-Encoding", b"identity"),
                ("te", b"Transfer-Encoding", b"chunked")])
@example(lines=[("te", b"Transfer-Encoding", b"chunked, identity")])
@example(lines=[("fold", b"Transfer-Encoding", b"chunked"), ("cl", b"Content-Length", b"0")])
@example(lines=[("cl", b"Content-Length", b"0"), ("cl", b"Content-Length", b"<n>")])
@given(lines=st.lists(_LINE, min_size=1, max_size=3))
def test_no_framing_spelling_reaches_the_upstream_framed_another_way(
    served: Served, lines: list[tuple[str, bytes, bytes]]
) -> None:
    """Forwarded with one framing and the body sent, or refused (problem+json under guard's
    server; h11 refuses some spellings itself, in plain text, before the app)."""
    body = CHUNKED if any(kind in ("te", "fold") for kind, _, _ in lines) else SMUGGLED
    framing = _framing(lines).replace(b"<n>", b"%d" % len(body))
    status, answer = _ask(served.server.port, _request(served.token, framing, body))
    assert status in (200, 400), answer.body  # forwarded, or refused as malformed
    if status == 400 and (served.kind == "guard"
                          or answer.headers.get(b"content-type") != b"text/plain; charset=utf-8"):
        assert _refused(status, answer)
    if _ambiguous(lines):
        assert status == 400, lines
    _check_upstream(served.upstream)


@pytest.mark.parametrize("framing", [
    b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(CHUNKED),
    b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
    b"transfer-encoding: CHUNKED\r\ncontent-length: 0\r\n",
    b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n",
])
def test_two_framings_are_a_recorded_400_problem_and_nothing_is_forwarded(
    served: Served, framing: bytes
) -> None:
    server, upstream, db, token, kind = served
    seen = len(upstream.messages)
    before = len(audit_rows(db, "kind = 'decision'"))
    status, answer = _ask(server.port, _request(token, framing, CHUNKED))
    if kind == "h11" and framing.count(b"Transfer-Encoding") > 1:
        assert status == 400  # h11 refuses two codings itself, before the app sees them
        assert len(upstream.messages) == seen
        return
    assert _refused(status, answer), (status, answer.body)
    assert answer.headers.get(b"connection") == b"close"
    problem_id = answer.headers.get(b"x-guard-decision-id")
    assert problem_id
    # a request smuggled behind an earlier test's may be judged (401, no token) meanwhile
    rows = [r for r in audit_rows(db, "kind = 'decision'")[before:]
            if r["http_route"] != "/customers/{customer_id}"]
    assert [(r["event_id"], r["allowed"], r["reason"], r["http_route"], r["http_status"])
            for r in rows] == [(problem_id.decode(), 0, "malformed_request", "<refused>", 400)]
    assert len(upstream.messages) == seen
    _check_upstream(upstream)


def test_one_framing_is_forwarded_as_sent(served: Served) -> None:
    server, upstream, _, token, _ = served
    for framing, body in ((b"Transfer-Encoding: chunked\r\n", CHUNKED),
                          (b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED)):
        seen = len(upstream.messages)
        status, _ = _ask(server.port, _request(token, framing, body))
        assert status == 200
        assert len(upstream.messages) == seen + 1
    _check_upstream(upstream)



def test_bytes_the_parser_refuses_are_answered_after_the_requests_before_them(
    served: Served,
) -> None:
    """A whole request, then bytes no server can read: its answer first, then the refusal."""
    if served.kind != "guard":
        return  # the recorded refusal of unparsable bytes is the guard server's
    first = _request(served.token, b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED)
    with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as conn:
        conn.sendall(first + b"NOT HTTP\r\n\r\n")
        received = b""
        while data := conn.recv(65536):
            received += data
    answers = _answers(received)
    assert [status for status, _ in answers] == [200, 400]
    assert _refused(400, answers[1][1])
    _check_upstream(served.upstream)


def _answers(received: bytes) -> list[tuple[int, _Answer]]:
    """Every answer in ``received``, in order (each with a Content-Length)."""
    out: list[tuple[int, _Answer]] = []
    rest = received
    while rest:
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        head, _, body = rest.partition(b"\r\n\r\n")
        parser.feed_data(head + b"\r\n\r\n")
        length = int(answer.headers.get(b"content-length", b"0"))
        parser.feed_data(body[:length])
        rest = body[length:]
        out.append((parser.get_status_code(), answer))
    return out


def test_the_first_answer_is_never_one_read_in_the_same_bytes_after_it() -> None:
    """Two answers in one read: the reader's first is the first (not the second's status)."""
    first = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    second = (b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/problem+json\r\n"
              b"content-length: 2\r\n\r\n{}")
    status, answer = _first_answer(iter([first + second]))
    assert (status, answer.body, answer.done) == (200, b"", True)


def test_a_pipelined_request_is_answered_after_the_one_before_it(served: Served) -> None:
    """A PUT whose body the server reads as none, the smuggled GET behind it: answers in order.

    One request's answer must never be taken for another's: the PUT's 200 (forwarded)
    comes first, then the GET's 401 (no token), on both servers.
    """
    request = _request(served.token, b"Content-Length: 0\r\n", SMUGGLED)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", served.server.port), timeout=10) as conn:
            conn.sendall(request)
            received = b""
            while received.count(b"HTTP/1.1 ") < 2 or not received.endswith(b"}"):
                data = conn.recv(65536)
                if not data:
                    break
                received += data
        answers = _answers(received)
        assert [status for status, _ in answers] == [200, 401], received
        assert b"x-guard-decision-id" in answers[1][1].headers
    _check_upstream(served.upstream)


def test_a_refusal_to_a_client_that_left_raises_nothing_into_the_loop(served: Served) -> None:
    """Bytes the parser refuses, then the client gone: recorded, and no task exception left.

    The refusal is written after its audit commit, to a socket the client closed (it may be
    reset by then): nothing reaches the loop's exception handler ("Task exception was
    never retrieved").
    """
    import gc

    if served.kind != "guard":
        return  # the recorded refusal of unparsable bytes is the guard server's
    loop = served.server.server.servers[0].get_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    done = threading.Event()

    def install(handler: Any) -> None:
        loop.set_exception_handler(handler)
        done.set()

    loop.call_soon_threadsafe(install, lambda _loop, context: reported.append(context))
    assert done.wait(10)
    try:
        refused = "kind = 'decision' AND reason = 'malformed_request'"
        before = len(audit_rows(served.db, refused))
        tries = 60
        whole = _request(served.token, b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED)
        for _ in range(tries):  # the first answer read, the connection closed, then the refusal
            assert _ask(served.server.port, whole + b"NOT HTTP\r\n\r\n")[0] == 200
        # generous deadlines (60 s): each refusal is recorded after its connection closed
        poll(lambda: len(audit_rows(served.db, refused)) >= before + tries, timeout=60)
        assert len(audit_rows(served.db, refused)) == before + tries

        def refusals() -> list[asyncio.Task[None]]:
            return [p._refusal for p in gc.get_objects()
                    if isinstance(p, SidecarHttpProtocol) and p._refusal is not None]

        poll(lambda: all(task.done() for task in refusals()), timeout=60)  # every task ended
        tasks = refusals()
        failed = [repr(task.exception()) for task in tasks if task.done() and task.exception()]
        gc.collect()
        assert failed + [str(c.get("exception") or c.get("message")) for c in reported] == []
    finally:
        done.clear()
        loop.call_soon_threadsafe(install, previous)
        done.wait(10)
