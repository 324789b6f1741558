"""Seventh review: behind uvicorn's ``httptools`` (no bound on a request's head) the
middleware itself keeps every audit event small.

The server holds what the client sent; what the guard copies into the trail is the
method, the purpose, the subject and the caller (each with its bound), the route's
template and categories (from the declaration), and a peer address: never the raw path,
the query or another header. A 60 KB path or query (about what ``httptools`` takes), thousands
of headers and a megabyte header value all leave an event of a few hundred bytes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenkit import Keys, UvicornThread, audit_rows, guard_settings

from examples.customers import create_app

MB = 1 << 20
PAD = "Zq"  # appears in no event field, policy name or template
EVENT_BOUND = 2048
TARGET = 30_000  # twice this in a target: httptools refuses a target past about 64 KiB


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Keys
           ) -> Iterator[tuple[UvicornThread, Path]]:
    base = tmp_path_factory.mktemp("red7bounds")
    with UvicornThread(create_app(guard_settings(base, keys)), http="httptools") as server:
        yield server, base / "audit.db"


def _get(port: int, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """A raw GET (clients refuse targets this long); the status, headers and body."""
    head = f"GET {target} HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode("latin-1"))
        received = b""
        while data := sock.recv(65536):
            received += data
    top, _, body = received.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    answer = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return int(lines[0].split()[1]), answer, body


@pytest.mark.parametrize("shape", ["path", "query", "many headers", "one huge header",
                                   "huge subject and purpose"])
def test_an_oversized_request_leaves_a_small_event(
    served: tuple[UvicornThread, Path], keys: Keys, shape: str
) -> None:
    server, db = served
    token = keys.mint("hs", sub="svc:crm")
    path = "/customers/c-0001"
    headers = {"authorization": f"Bearer {token}", "x-purpose": "relationship.management"}
    if shape == "path":
        path = "/customers/" + PAD * TARGET
    elif shape == "query":
        path += "?q=" + PAD * TARGET
    elif shape == "many headers":
        headers.update({f"x-{PAD}-{i}": PAD * 100 for i in range(5000)})
    elif shape == "one huge header":
        headers["x-" + PAD] = PAD * (MB // 2)
    else:
        path = "/customers/" + PAD * TARGET
        headers["x-purpose"] = PAD * (MB // 2)
    status, answer_headers, body = _get(server.port, path, headers)
    decision = answer_headers.get("x-guard-decision-id") or json.loads(body).get("decision_id")
    assert decision, (status, body[:200])
    assert len(body) < 4096  # nothing of the request echoed whole
    rows = audit_rows(db, "event_id = ? OR decision_ref = ?", (decision, decision))
    assert rows
    for row in rows:
        size = sum(len(str(value)) for value in row.values() if value is not None)
        assert size < EVENT_BOUND, (shape, size)
        assert len(row["purpose"]) <= 200  # a purpose is stored cut to its bound
        assert PAD * 8 not in str({k: v for k, v in row.items() if k != "purpose"}), shape
