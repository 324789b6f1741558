"""The console reads at most a small form from anyone, signed in or not, whatever the framing.

Its sign-in form is open to everyone (it is how one signs in), in ``guard console`` and in
the sidecar that mounts the console; a body read whole before its size was looked at let
a client with no credentials fill the serving process's memory.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from memkit import PeakRss
from sidecarkit import ServerThread, free_port, policy_copy, sidecar_settings

from guard.config import ConsoleSettings
from middleware.console import create_console
from middleware.sidecar import create_app

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MB = 1 << 20
AUDITOR = "svc:support"


def _settings(tmp: Path, keys: Any, *, mounted: bool) -> Any:
    policy = policy_copy(tmp / "policy", POLICIES)
    settings = sidecar_settings(tmp, policy, keys.identity())
    console = ConsoleSettings(auditors=[AUDITOR], mount_in_sidecar=mounted)
    return settings.model_copy(update={"console": console})


@pytest.fixture(scope="module", params=["guard console", "sidecar"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           keys: Any) -> Iterator[tuple[ServerThread, str]]:
    """The console under uvicorn in a thread of this process (the process whose RSS is read):
    on its own, and mounted in the sidecar; with the path prefix of its sign-in."""
    tmp = tmp_path_factory.mktemp("consolebody")
    mounted = request.param == "sidecar"
    settings = _settings(tmp, keys, mounted=mounted)
    app = create_app(settings) if mounted else create_console(settings)
    with ServerThread(app, free_port()) as server:
        yield server, "/console" if mounted else ""


def _post(port: int, head: bytes, body: Iterator[bytes]) -> int:
    """Send ``head`` and then ``body`` on a raw socket while reading the answer; its status.

    Another thread sends the body, so a server that answers early and closes is heard.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(head)

    def send_body() -> None:
        try:
            for chunk in body:
                sock.sendall(chunk)
        except OSError:  # the server answered and closed: stop sending
            return

    sender = threading.Thread(target=send_body, daemon=True)
    sender.start()
    received = b""
    try:
        while b"\r\n" not in received:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    finally:
        sock.close()
        sender.join(timeout=60)
    return int(received.split(b"\r\n", 1)[0].split()[1])


def _chunked(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes of form filler in HTTP/1.1 chunked framing (one buffer reused)."""
    frame = b"%x\r\n" % size + b"a" * size + b"\r\n"
    for _ in range(total // size):
        yield frame
    yield b"0\r\n\r\n"


def test_a_huge_sign_in_body_is_refused_and_memory_stays_flat(
    served: tuple[ServerThread, str],
) -> None:
    server, prefix = served
    head = (b"POST " + prefix.encode() + b"/signin HTTP/1.1\r\nHost: console\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with PeakRss() as rss:
        before = rss.peak
        status = _post(server.port, head, _chunked(160 * MB))
    # Reading the whole body first held all 160 MB (and a joined copy) in this process.
    assert rss.peak - before < 40 * MB, f"RSS grew by {(rss.peak - before) // MB} MB"
    assert status == 413


def test_a_declared_length_past_the_bound_is_refused_unread(
    served: tuple[ServerThread, str],
) -> None:
    server, prefix = served
    head = (b"POST " + prefix.encode() + b"/signin HTTP/1.1\r\nHost: console\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 400000000\r\n\r\n")
    # The client sends a little of what it declared: the answer must not wait for the rest.
    assert _post(server.port, head, iter([b"token=" + b"a" * 1024])) == 413


def test_a_sign_in_form_within_the_bound_is_read(
    served: tuple[ServerThread, str], keys: Any,
) -> None:
    server, prefix = served
    with httpx.Client(base_url=server.url, timeout=10) as client:
        good = client.post(prefix + "/signin", data={"token": keys.mint("hs", sub=AUDITOR)})
        assert good.status_code == 303
        assert good.headers["location"] == prefix + "/decisions"
        wrong = client.post(prefix + "/signin", data={"token": "x" * 2000})
        assert wrong.status_code == 401


def test_an_auditors_subject_form_past_the_bound_is_refused(
    served: tuple[ServerThread, str], keys: Any,
) -> None:
    server, prefix = served
    with httpx.Client(base_url=server.url, timeout=10) as client:
        signed = client.post(prefix + "/signin", data={"token": keys.mint("hs", sub=AUDITOR)})
        assert signed.status_code == 303
        assert client.post(prefix + "/subject", data={"subject": "c" * 20_000}).status_code == 413
        looked = client.post(prefix + "/subject", data={"subject": "c-0042"})
        assert looked.status_code == 303
