"""Seventh review: ``guard console`` bounds a request's head, as ``guard sidecar`` does.

The console's sign-in is open to everyone. ``guard console`` ran uvicorn's default
``httptools`` server, which sets no bound on a request's head: a client with no
credentials sent one header line without end and the console kept every byte of it
(the fifth review bounded it for ``guard sidecar``'s own server only). ``guard console``
now runs uvicorn's ``h11`` server, which refuses a head past 16 KiB.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from memkit import rss

from bench._pg import free_port

GUARD = [sys.executable, "-c", "from guard.cli import main; main()"]
MB = 1 << 20


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """``guard console`` as an operator starts it; its port and process id."""
    port = free_port()
    config = tmp_path / "guard.toml"
    config.write_text(
        f'[audit]\nstore = "sqlite:///{tmp_path / "audit.db"}"\n'
        f'hmac_key = "{tmp_path / "subject-hmac.key"}"\n'
        f'signing_key = "{tmp_path / "audit-signing.key"}"\n'
        f'[identity]\ndev_key = "{tmp_path / "dev.key"}"\n'
        f'[console]\nport = {port}\nauditors = ["svc:support"]\n')
    served = subprocess.Popen([*GUARD, "console"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              env={"GUARD_CONFIG": str(config), "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert served.poll() is None, "guard console did not start"
                assert time.monotonic() < deadline, "guard console did not start in time"
                time.sleep(0.1)
        yield port, served.pid
    finally:
        served.send_signal(signal.SIGTERM)
        try:
            served.wait(timeout=20)
        except subprocess.TimeoutExpired:
            served.kill()
            served.wait()


def test_an_endless_header_line_is_refused_and_memory_stays_flat(
    console: tuple[int, int],
) -> None:
    port, pid = console
    before = rss(pid)
    peak = before
    answer = b""
    chunk = b"a" * MB
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /signin HTTP/1.1\r\nHost: console\r\nX-Pad: ")
        try:
            for _ in range(64):  # 64 MB of one header line, never ended
                sock.sendall(chunk)
                peak = max(peak, rss(pid))
        except OSError:  # refused and closed: what should happen
            pass
        sock.settimeout(5)
        try:
            answer = sock.recv(200)
        except OSError:
            answer = b""
    time.sleep(0.2)
    peak = max(peak, rss(pid))
    assert peak - before < 16 * MB, f"guard console grew by {(peak - before) // MB} MB"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer
    assert os.path.exists(f"/proc/{pid}")  # still serving


def test_a_sign_in_page_is_still_served(console: tuple[int, int]) -> None:
    port, _ = console
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(b"GET /signin HTTP/1.1\r\nHost: console\r\nConnection: close\r\n\r\n")
        received = b""
        while data := sock.recv(65536):
            received += data
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
