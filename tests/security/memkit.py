"""For the tests that bound what a server can be made to hold: a body streamed at it on a raw
socket, and resident memory read from /proc."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path


def rss(pid: int | str = "self") -> int:
    """The resident set size of process ``pid`` in bytes (``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


class PeakRss:
    """Samples this process's RSS every few milliseconds; ``peak`` is the largest seen."""

    def __init__(self) -> None:
        self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def post_streaming(port: int, head: bytes, body: Iterator[bytes], timeout: float = 60) -> bytes:
    """Send ``head`` and then ``body`` on a raw socket while reading the answer; the answer.

    Another thread sends the body, so a server that answers early and closes is heard,
    not reset. The answer is read up to its declared length, or until the server closes.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
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
        while not _complete(received):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    finally:
        sock.close()
        sender.join(timeout=timeout)
    return received


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer."""
    return int(answer.split(b"\r\n", 1)[0].split()[1])


def _complete(received: bytes) -> bool:
    head, found, payload = received.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(payload) >= int(value)
    return False


def chunked(total: int, filler: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes of ``filler`` (one byte) in HTTP/1.1 chunked framing, one buffer reused."""
    frame = b"%x\r\n" % size + filler * size + b"\r\n"
    for _ in range(total // size):
        yield frame
    yield b"0\r\n\r\n"
