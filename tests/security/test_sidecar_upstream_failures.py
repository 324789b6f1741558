"""An upstream that dies: the outcome says so, and no log line names the person asked about.

The upstream is a raw TCP server that answers per path: a status and part of
the body and then a closed connection, or a closed connection and nothing.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import ServerThread, audit_rows, policy_copy, poll, serve_sidecar, sidecar_settings
from upstreamkit import ThreadedUpstream, read_head

POLICIES = Path(__file__).resolve().parents[2] / "policies"
SUBJECT = "c-0042"


class DyingUpstream(ThreadedUpstream):
    """Answers ``/customers/*`` with 200, 1,000 of 100,000 promised bytes, then closes;
    ``/echo/*`` the same in chunked framing; anything else closes before answering."""

    def handle(self, conn: socket.socket) -> None:
        head = read_head(conn)
        if head is None:
            return
        path = head.split(b" ", 2)[1]
        if path.startswith(b"/customers/"):
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        elif path.startswith(b"/echo/"):
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n"
                + b"y" * 1000
                + b"\r\n"
            )

    def __enter__(self) -> DyingUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Lines(logging.Handler):
    """Every line the sidecar logs, formatted as an operator would read it (tracebacks too).

    Lines from the test's own thread (its HTTP client) are not the sidecar's.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self._client_thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self._client_thread:
            self.lines.append(self.format(record))


@pytest.fixture
def logs() -> Iterator[_Lines]:
    """Captures the root logger and the loggers that do not propagate to it (uvicorn's).

    Not uvicorn's access log: ``guard sidecar`` turns it off (it would log every raw path).
    """
    handler = _Lines()
    names = ["", "guard", "middleware", "uvicorn", "uvicorn.error"]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


@pytest.fixture(scope="module")
def proxied(
    tmp_path_factory: pytest.TempPathFactory, keys: Any
) -> Iterator[tuple[ServerThread, Path]]:
    tmp = tmp_path_factory.mktemp("dying")
    policy = policy_copy(tmp / "policy", POLICIES)
    with DyingUpstream() as upstream:
        settings = sidecar_settings(
            tmp, policy, keys.identity(), upstream=f"http://127.0.0.1:{upstream.port}"
        )
        with serve_sidecar(settings) as sidecar:
            yield sidecar, tmp / "audit.db"


def _auth(keys: Any) -> dict[str, str]:
    return {
        "authorization": f"Bearer {keys.mint('hs', sub='svc:crm')}",
        "x-purpose": "relationship.management",
    }


def _outcome_of_last(db: Path, route: str) -> dict[str, Any]:
    decisions = audit_rows(db, "kind = 'decision' AND http_route = ?", (route,))
    ref = decisions[-1]["event_id"]
    return poll(lambda: audit_rows(db, "decision_ref = ?", (ref,)))[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("path", "route"),
    [(f"/customers/{SUBJECT}", "/customers/{customer_id}"), ("/echo/x", "/echo/{name}")],
    ids=["content-length", "chunked"],
)
def test_a_body_cut_short_is_recorded_as_aborted(
    proxied: tuple[ServerThread, Path], keys: Any, path: str, route: str
) -> None:
    sidecar, db = proxied
    with pytest.raises(httpx.RemoteProtocolError):  # the client sees the cut, not a short 200
        httpx.get(sidecar.url + path, headers=_auth(keys))
    outcome = _outcome_of_last(db, route)
    assert (outcome["kind"], outcome["http_status"], outcome["detail"]) == (
        "outcome",
        200,
        "aborted",
    )


def test_a_complete_failure_is_a_502_decision_not_aborted(
    proxied: tuple[ServerThread, Path], keys: Any
) -> None:
    sidecar, db = proxied
    resp = httpx.get(f"{sidecar.url}/files/x", headers=_auth(keys))
    assert resp.status_code == 502
    decision_id = resp.json()["decision_id"]
    rows = audit_rows(db, "event_id = ? OR decision_ref = ?", (decision_id, decision_id))
    assert [(r["kind"], r["http_status"], r["detail"]) for r in rows] == [
        ("decision", 502, None)]


def test_no_log_line_names_the_subject(
    proxied: tuple[ServerThread, Path], keys: Any, logs: _Lines
) -> None:
    sidecar, _ = proxied
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{sidecar.url}/customers/{SUBJECT}", headers=_auth(keys))
    # Failed before answering (502), refused as ambiguous, and unauthenticated: all about c-0042.
    httpx.get(f"{sidecar.url}/files/{SUBJECT}", headers=_auth(keys))
    httpx.get(f"{sidecar.url}/customers/{SUBJECT};v=1", headers=_auth(keys))
    httpx.get(f"{sidecar.url}/customers/{SUBJECT}")
    httpx.get(f"{sidecar.url}/v1/check", headers={"x-original-uri": f"/customers/{SUBJECT}"})
    text = "\n".join(logs.lines)
    assert "upstream failed for GET /files/{name}" in text  # the capture sees the sidecar's log
    assert "upstream aborted its answer to GET /customers/{customer_id}" in text
    assert SUBJECT not in text


class _BrokenRoutes:
    """A route table whose error message names the path, as an unexpected error might."""

    def match(self, method: str, path: str) -> None:
        raise RuntimeError(f"no table for {method} {path}")


def test_an_internal_error_is_logged_without_the_path_or_its_message(
    tmp_path: Path, keys: Any, logs: _Lines
) -> None:
    import asyncio

    from middleware.sidecar import build_sidecar, create_app

    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings = sidecar_settings(tmp_path, policy, keys.identity(), upstream="http://127.0.0.1:9")
    sidecar = build_sidecar(settings)
    sidecar.routes = _BrokenRoutes()  # type: ignore[assignment]
    app = create_app(sidecar=sidecar)

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
            return await client.get(f"/customers/{SUBJECT}", headers=_auth(keys))

    logs._client_thread = -1  # the app runs on this thread here: keep every line
    try:
        resp = asyncio.run(ask())
    finally:
        sidecar.guard.close()
    assert resp.status_code == 500
    # httpx's own "HTTP Request:" line is the test client's (the sidecar uses no httpx client).
    text = "\n".join(line for line in logs.lines if not line.startswith("INFO httpx:"))
    assert "the sidecar failed on a GET request: RuntimeError" in text
    assert SUBJECT not in text
