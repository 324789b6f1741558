"""Ninth review: no percent-encoded letter makes the sidecar judge one route while the
upstream runs another.

The sidecar judges a target's path decoded once, as uvicorn, nginx, Spring and ASP.NET
Core route it, and forwards the target as it came. Express (path-to-regexp over
``req.url``) matches its routes against the path as sent and decodes only the values of
parameters: ``/accounts/%6De`` is ``GET /accounts/me`` (public: no decision, no event)
to the guard, and ``/accounts/:account_id`` with the id ``me`` to Express, which ran
its financial handler unjudged and unrecorded (the eighth review's leftover). A target
that percent-encodes an unreserved character (a letter, a digit, ``-``, ``_``, ``~``:
no client need encode one) is now refused, 400 ``malformed_request``, and recorded.
The upstream here is Node's own HTTP server routing exactly as Express does.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sidecarkit import (
    ServerThread,
    audit_rows,
    free_port,
    policy_copy,
    serve_sidecar,
    sidecar_settings,
    wait_for_port,
)

from middleware.sidecar._paths import judgeable_path

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ROUTES = """\
GET,  /accounts/me,                public
GET,  /accounts/{account_id},      financial, read, account_id
"""
EXPRESS = """
// Routes as Express 4 does: the literal route first, each matched against req.url's path
// as sent (path-to-regexp); a parameter's value is decoded (decodeURIComponent).
const http = require('http');
const routes = [[/^\\/accounts\\/me\\/?$/i, 'me'],
                [/^\\/accounts\\/([^\\/]+?)\\/?$/i, 'account']];
http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  for (const [pattern, name] of routes) {
    const found = pattern.exec(path);
    if (found) {
      const id = found[1] === undefined ? null : decodeURIComponent(found[1]);
      console.log(JSON.stringify({ran: name, id: id}));
      res.writeHead(200, {'content-type': 'application/json'});
      res.end(JSON.stringify({ran: name, id: id}));
      return;
    }
  }
  res.writeHead(404); res.end();
}).listen(Number(process.argv[2]), '127.0.0.1');
"""


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, keys: Any
            ) -> Iterator[tuple[ServerThread, Path, Path]]:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("Node.js is not installed")
    tmp = tmp_path_factory.mktemp("encoded")
    policy = policy_copy(tmp / "policy", POLICIES, routes=ROUTES)
    (tmp / "express.js").write_text(EXPRESS)
    port = free_port()
    log = tmp / "ran.log"
    with log.open("wb") as out:
        upstream = subprocess.Popen([node, str(tmp / "express.js"), str(port)], stdout=out)
    try:
        wait_for_port(port, proc=upstream)
        settings = sidecar_settings(tmp, policy, keys.identity(),
                                    upstream=f"http://127.0.0.1:{port}")
        with serve_sidecar(settings) as sidecar:
            yield sidecar, tmp / "audit.db", log
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


def _raw(port: int, target: str) -> int:
    """The status of a GET with ``target`` sent exactly as written (no client rewrites it)."""
    head = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode())
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def _ran(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("target", ["/accounts/%6De", "/accounts/m%65", "/accounts/%4De",
                                    "/%61ccounts/me"])
def test_an_encoded_letter_never_runs_a_route_the_guard_did_not_judge(
    proxied: tuple[ServerThread, Path, Path], target: str,
) -> None:
    sidecar, db, log = proxied
    before = len(_ran(log))
    status = _raw(sidecar.port, target)
    # Before: 200 from the account handler with the id "me", no decision, no event.
    assert status == 400
    assert _ran(log)[before:] == []
    refused = audit_rows(db, "http_route = '<refused>'")
    assert refused
    assert refused[-1]["reason"] == "malformed_request"


def test_the_public_route_and_an_encoded_colon_still_pass(
    proxied: tuple[ServerThread, Path, Path],
) -> None:
    sidecar, _, log = proxied
    before = len(_ran(log))
    assert _raw(sidecar.port, "/accounts/me") == 200
    assert _ran(log)[before:] == [{"ran": "me", "id": None}]
    assert judgeable_path("/accounts/a%3A1") == "/accounts/a:1"  # what encodeURIComponent sends


_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~"


@given(st.text(alphabet=_UNRESERVED + ":@!$&'()*+,=", min_size=1, max_size=8),
       st.sampled_from(_UNRESERVED), st.booleans())
def test_a_target_decodes_to_the_path_sent_or_is_refused(
    segment: str, encoded: str, lower: bool,
) -> None:
    escape = f"%{ord(encoded):02X}"
    target = f"/accounts/{segment}{escape.lower() if lower else escape}"
    assert judgeable_path(target) is None
    path = judgeable_path(f"/accounts/{segment}")
    assert path is None or path == f"/accounts/{segment}"
