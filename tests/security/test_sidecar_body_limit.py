"""``POST /v1/decide`` never holds more than its body limit, however the body is framed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memkit import PeakRss, chunked, post_streaming, status_of
from sidecarkit import ServerThread, policy_copy, serve_sidecar, sidecar_settings

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MB = 1 << 20


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[ServerThread]:
    """The sidecar under uvicorn in a thread of this process (the process whose RSS is read)."""
    tmp = tmp_path_factory.mktemp("bodylimit")
    policy = policy_copy(tmp / "policy", POLICIES)
    with serve_sidecar(sidecar_settings(tmp, policy, keys.identity())) as server:
        yield server


def _post(port: int, head: bytes, body: Iterator[bytes]) -> tuple[int, dict[str, Any]]:
    """The status and problem body of the answer to ``head`` and ``body`` sent raw."""
    answer = post_streaming(port, head, body, timeout=15)
    return status_of(answer), json.loads(answer.partition(b"\r\n\r\n")[2])


def test_a_chunked_body_past_the_limit_is_413_and_memory_stays_flat(
    served: ServerThread, keys: Any
) -> None:
    token = keys.mint("hs", sub="svc:crm")
    head = (
        b"POST /v1/decide HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with PeakRss() as rss:
        before = rss.peak
        status, problem = _post(served.port, head, chunked(128 * MB, b" "))
    assert status == 413
    assert problem["reason"] == "malformed_request"
    # Reading the whole body first held all 128 MB (and a joined copy) in this process.
    assert rss.peak - before < 40 * MB, f"RSS grew by {(rss.peak - before) // MB} MB"


def test_a_declared_length_past_the_limit_is_refused_before_the_body_is_read(
    served: ServerThread, keys: Any
) -> None:
    token = keys.mint("hs", sub="svc:crm")
    head = (
        b"POST /v1/decide HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 400000000\r\n\r\n"
    )
    # The client sends only a little of what it declared: the answer must not wait for the rest.
    status, problem = _post(served.port, head, iter([b"{" * 1024]))
    assert status == 413
    assert problem["reason"] == "malformed_request"


def test_a_body_within_the_limit_is_still_judged(served: ServerThread, keys: Any) -> None:
    token = keys.mint("hs", sub="svc:crm")
    body = json.dumps(
        {"purpose": "relationship.management", "categories": ["contact.email"]}
    ).encode()
    padded = body + b" " * (MB - len(body) - 1)
    head = (
        b"POST /v1/decide HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    frames = iter([b"%x\r\n" % len(padded) + padded + b"\r\n", b"0\r\n\r\n"])
    status, answer = _post(served.port, head, frames)
    assert status == 200
    assert answer["decision"]["allowed"] is True
