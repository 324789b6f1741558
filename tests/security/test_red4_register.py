"""Fourth review: a replica hears every rights change, even over a link that died silently.

Replicas at PostgreSQL learn of another replica's register entries (an erasure, a
consent withdrawn) by LISTEN/NOTIFY on one long-lived, mostly idle connection. A
NAT, a firewall or a load balancer that forgets an idle connection drops its
packets without a word: without TCP keepalives the replica never notices, hears
nothing more, says it is following, and goes on allowing what the subject refused.

Here the replica runs in a network namespace of its own, reaching PostgreSQL through
a relay (its loopback, then a UNIX socket); taking that loopback down drops every
packet of the connection, keepalive probes included, as such a middlebox does.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from guard.policy import load_policy
from guard.rights import Change, EntryKind, Register
from tests.guard.rights.rightskit import KEY, SUBJECT, Events

pytestmark = pytest.mark.postgres

REPLICA = r'''
import socket, subprocess, sys, threading, time
from urllib.parse import urlsplit, urlunsplit
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
unix_path, url, key, subject = sys.argv[1:5]

def pump(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass

listener = socket.create_server(("127.0.0.1", 0))
def accept():
    while True:
        client, _ = listener.accept()
        out = socket.socket(socket.AF_UNIX)
        out.connect(unix_path)
        for a, b in ((client, out), (out, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()

from guard.rights import Register
from guard.rights import _register
params = getattr(_register, "LISTEN_PARAMS", None)
if params is not None:  # as configured, made short so the test waits seconds, not a minute
    _register.LISTEN_PARAMS = {**params, "keepalives_idle": 1, "keepalives_interval": 1,
                               "keepalives_count": 2}
parts = urlsplit(url)
user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
relayed = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{listener.getsockname()[1]}"))
replica = Register.open(relayed, key.encode(), watch=True)

def commands():
    for line in sys.stdin:
        state = "down" if line.strip() == "drop" else "up"
        subprocess.run(["ip", "link", "set", "lo", state], check=True)
        print("lo", state, flush=True)
threading.Thread(target=commands, daemon=True).start()
said = None
while True:
    now = (replica.listening, replica.lookup(subject) is not None)
    if now != said:
        print("listening", now[0], "erased", now[1], flush=True)
        said = now
    time.sleep(0.05)
'''


def unix_to_tcp(path: Path, target: tuple[str, int], stop: threading.Event) -> None:
    """Relay each connection made to the UNIX socket ``path`` to ``target`` over TCP."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    listener.settimeout(0.2)
    opened: list[socket.socket] = [listener]

    def pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                if select.select([a], [], [], 0.2)[0]:
                    data = a.recv(65536)
                    if not data:
                        break
                    b.sendall(data)

    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        upstream = socket.create_connection(target)
        opened += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()
    for sock in opened:
        with contextlib.suppress(OSError):
            sock.close()


class Replica:
    """The replica's process and the lines it says, read as they come by a thread of their own
    (a ``select`` on the pipe misses lines that one ``readline`` buffered together)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def said(self, wanted: str, seconds: float) -> None:
        """Read the replica's lines until one is ``wanted``; fail after ``seconds``."""
        deadline = time.monotonic() + seconds
        lines = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            lines.append(line)
            if line == wanted:
                return
        pytest.fail(f"the replica never said {wanted!r} (it said {lines})")


@pytest.fixture
def replica(pg_url: str, tmp_path: Path) -> Iterator[Replica]:
    if shutil.which("unshare") is None or shutil.which("ip") is None or os.geteuid() != 0:
        pytest.skip("needs root, unshare and ip for a network namespace")
    probe = subprocess.run(["unshare", "-n", "true"], check=False, capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace: {probe.stderr.decode().strip()}")
    parts = urlsplit(pg_url)
    stop = threading.Event()
    path = tmp_path / "pg.sock"
    threading.Thread(target=unix_to_tcp, daemon=True, args=(
        path, (parts.hostname or "127.0.0.1", parts.port or 5432), stop)).start()
    while not path.exists():
        time.sleep(0.01)
    proc = subprocess.Popen(
        ["unshare", "-n", sys.executable, "-c", REPLICA, str(path), pg_url, KEY.decode(),
         SUBJECT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield Replica(proc)
    finally:
        proc.kill()
        proc.wait()
        stop.set()


def test_a_replica_behind_a_link_that_died_silently_learns_of_an_erasure(
        replica: Replica, pg_url: str) -> None:
    # listening: the register read (a link dropped while it is read is no test of keepalives)
    replica.said("listening True erased False", 60)
    replica.tell("drop")
    replica.said("lo down", 30)
    other = Register.open(pg_url, KEY)
    try:
        other.record(Change(SUBJECT, EntryKind.ERASURE_REQUESTED, "", None, "T-9", "test:dpo"),
                     load_policy(None), Events())
    finally:
        other.close()
    # the dead link is noticed (and said: no longer following) instead of waited on for ever
    replica.said("listening False erased False", 60)
    replica.tell("up")
    replica.said("listening True erased True", 60)  # read again once it is back
