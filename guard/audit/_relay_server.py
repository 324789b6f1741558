"""The audit relay: a process that owns the audit trail and records events sent to it.

Started by :class:`guard.audit.RelayTrail` as ``python -m guard.audit._relay_server
SOCKET``. It reads the audit settings (JSON) from the first line of its standard
input, opens the trail, listens on ``SOCKET`` and prints ``ready`` on its standard
output. Its standard input stays open as a life line: when it closes (the parent
closed the trail, or died) the relay commits what it holds, writes the closing
checkpoint and exits.

One I/O thread reads every connection, builds the events and sends the
acknowledgements; whatever arrived while the previous commit was being written
goes into the next transaction. A committer thread writes a batch while the
I/O thread reads the next one; when it is idle, the I/O thread commits itself
(no hand-off at low load). The service whose requests are recorded spends none
of its own CPU on building rows, hashing or writing them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import threading
from typing import Any

from guard._errors import AuditUnavailableError
from guard.audit._event import AuditEvent, EventKind
from guard.audit._keys import load_hmac_key
from guard.audit._pipeline import AuditPipeline
from guard.audit._relay_wire import (
    BUILD,
    BUILD_POST,
    FLUSH,
    POST,
    READY,
    RECORD,
    WRITER,
    FrameReader,
    WireError,
    event_from_wire,
    frame,
)
from guard.audit._trail import AuditTrail

_log = logging.getLogger("guard.audit.relay")
_CONTROL = "control"
_LISTENER = "listener"
_WAKE = "wake"
_RECV = 1 << 20
Ack = tuple[int, str | None, Any]


class _Client:
    """One connection: its socket, its partial frames, the acknowledgements it is owed."""

    __slots__ = ("acks", "closed", "reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = FrameReader()
        self.acks: list[Ack] = []
        self.closed = False


Work = tuple[_Client | None, int, int, AuditEvent | None]
"""``(client, msg_id, op, event)``; ``client`` is None for a posted event."""


class _Committer:
    """The thread that hands batches to the trail while the I/O thread reads the next.

    SQLite's commit (and its ``fsync``) releases the interpreter lock, so the next
    batch is read, decoded and built while the previous one is written. When the
    thread is idle the I/O thread commits a batch itself (no hand-off).
    Work is done in the order it was submitted: a flush answers only after
    everything before it is committed.
    """

    def __init__(self, trail: AuditTrail, wake: int) -> None:
        self.trail = trail
        self._wake = wake
        self._cond = threading.Condition()
        self._queue: list[Work] = []
        self._done: list[tuple[_Client, Ack]] = []
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="audit-relay-commit", daemon=True)
        self._thread.start()

    def submit(self, work: list[Work]) -> None:
        with self._cond:
            self._queue.extend(work)
            self._cond.notify()

    def take_done(self) -> list[tuple[_Client, Ack]]:
        """The acknowledgements ready to send."""
        with self._cond:
            done, self._done = self._done, []
            return done

    def stop(self) -> None:
        """Finish the queued work, then end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join()

    def idle(self) -> bool:
        """True when no work is queued or being done (the I/O thread may do it itself)."""
        with self._cond:
            return not self._queue and not self._busy

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                work, self._queue = self._queue, []
                self._busy = True
            done = self.process(work)
            with self._cond:
                self._done += done
                self._busy = False
            os.write(self._wake, b"x")

    def process(self, work: list[Work]) -> list[tuple[_Client, Ack]]:
        """Do ``work`` in order; the acknowledgements it produced."""
        done: list[tuple[_Client, Ack]] = []
        start = 0
        for i, (client, msg_id, op, _event) in enumerate(work):
            if op not in _EVENT_OPS:
                done += self._record(work[start:i])
                start = i + 1
                if client is not None:
                    done.append((client, (msg_id, *self._answer(op))))
        done += self._record(work[start:])
        return done

    def _record(self, work: list[Work]) -> list[tuple[_Client, Ack]]:
        """Commit the acknowledged events together; posted ones ride along with a later commit.

        Posted events go to the trail's queue (:meth:`AuditTrail.post`): they join
        the next commit someone waits on, or the trail's writer thread commits
        them shortly after, so a posted event never costs a commit of its own.
        """
        acked: list[tuple[_Client, int, AuditEvent]] = []
        for client, msg_id, _op, event in work:
            assert event is not None
            if client is not None:
                acked.append((client, msg_id, event))
                continue
            try:
                self.trail.post(event)
            except AuditUnavailableError as exc:
                _log.error("audit event %s (%s) was not recorded: %s",
                           event.event_id, event.kind.value, exc)
        if not acked:
            return []
        try:
            errors = self.trail.record_many([event for _, _, event in acked])
        except AuditUnavailableError as exc:
            errors = [exc] * len(acked)
        return [(client, (msg_id, None, event.event_id) if error is None
                 else (msg_id, str(error), None))
                for (client, msg_id, event), error in zip(acked, errors, strict=True)]

    def _answer(self, op: int) -> tuple[str | None, Any]:
        try:
            if op == FLUSH:
                self.trail.flush()
                return None, None
            if op == READY:
                return None, self.trail.ready()
            if op == WRITER:
                return None, self.trail.writer_id
        except AuditUnavailableError as exc:
            return str(exc), None
        return f"unknown operation {op!r}", None


class RelayServer:
    """Serve ``trail`` on the listening Unix socket ``listener`` until ``control`` closes."""

    def __init__(
        self, trail: AuditTrail, pipeline: AuditPipeline, listener: socket.socket, control: int
    ) -> None:
        self.pipeline = pipeline
        self._listener = listener
        self._control = control
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._committer = _Committer(trail, wake_w)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, _LISTENER)
        self._selector.register(control, selectors.EVENT_READ, _CONTROL)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._running = True

    def serve(self) -> None:
        """Hand what arrives to the committer, send what it acknowledged, until told to stop.

        Once told, it goes on reading until no connection has anything left, so
        frames sent before the life line closed are recorded too.
        """
        while True:
            work: list[Work] = []
            busy = False
            for key, _ in self._selector.select(timeout=1.0 if self._running else 0):
                if key.data == _LISTENER:
                    busy = True
                    self._accept()
                elif key.data == _CONTROL:
                    if not os.read(self._control, 4096):
                        self._selector.unregister(self._control)
                        self._running = False
                elif key.data == _WAKE:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                else:
                    busy = True
                    self._read(key.data, work)
            if work:
                committer = self._committer
                if committer.idle():  # nothing to overlap with: no hand-off to the thread
                    for client, ack in committer.process(work):
                        client.acks.append(ack)
                else:
                    committer.submit(work)
            self._send_acks()
            if not self._running and not busy:
                break
        self._committer.stop()
        self._send_acks()
        for key in list(self._selector.get_map().values()):
            if isinstance(key.data, _Client):
                self._drop(key.data)
        self._selector.close()

    def stop(self) -> None:
        """Stop after the batch in hand (from a signal handler)."""
        self._running = False

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        if not _same_user(sock):
            _log.warning("refused a relay connection from another user")
            sock.close()
            return
        sock.settimeout(10.0)  # sends; reads never block (MSG_DONTWAIT)
        self._selector.register(sock, selectors.EVENT_READ, _Client(sock))

    def _read(self, client: _Client, work: list[Work]) -> None:
        try:
            data = client.sock.recv(_RECV, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        try:
            messages = client.reader.feed(data)
        except WireError as exc:
            _log.error("closing a relay connection: %s", exc)
            self._drop(client)
            return
        for message in messages:
            try:
                msg_id, op, payload = message
            except (TypeError, ValueError):
                _log.error("closing a relay connection: a message is not (id, op, payload)")
                self._drop(client)
                return
            acked = op not in (POST, BUILD_POST)
            if op not in _EVENT_OPS:
                work.append((client, msg_id, op, None))
                continue
            try:
                event = self._event(op, payload)
            except WireError as exc:
                if acked:
                    client.acks.append((msg_id, str(exc), None))
                else:
                    _log.error("a posted audit event was refused: %s", exc)
                continue
            work.append((client if acked else None, msg_id, op, event))

    def _event(self, op: int, payload: Any) -> AuditEvent:
        if op in (RECORD, POST):
            return event_from_wire(payload)
        try:
            kind, fields = payload
            return self.pipeline.event(EventKind(kind), **fields)
        except (TypeError, ValueError) as exc:
            raise WireError(f"not the fields of an audit event: {exc}") from None

    def _send_acks(self) -> None:
        for client, ack in self._committer.take_done():
            client.acks.append(ack)
        for key in list(self._selector.get_map().values()):
            client = key.data
            if not isinstance(client, _Client) or not client.acks:
                continue
            acks, client.acks = client.acks, []
            try:
                client.sock.sendall(frame(acks))
            except OSError as exc:
                _log.error("a relay client stopped reading: %s", exc)
                self._drop(client)

    def _drop(self, client: _Client) -> None:
        if not client.closed:
            client.closed = True
            self._selector.unregister(client.sock)
            client.sock.close()


_EVENT_OPS = frozenset({RECORD, POST, BUILD, BUILD_POST})


def _same_user(sock: socket.socket) -> bool:
    """True when the peer runs as this process's user (``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return bool(uid == os.getuid())


def main(argv: list[str] | None = None) -> int:
    """Open the trail from the settings on stdin, serve on ``argv[0]``, report ``ready``."""
    from guard.config import AuditSettings

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="guard audit relay: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("error usage: python -m guard.audit._relay_server SOCKET", flush=True)
        return 2
    control = sys.stdin.fileno()
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(control, 1)
        if not chunk:
            return 1
        line += chunk
    try:
        settings = AuditSettings.model_validate_json(line)
        pipeline = AuditPipeline(load_hmac_key(settings.hmac_key, create=True),
                                 trace_context=False)
        trail = AuditTrail.open(settings)
    except Exception as exc:  # told to the parent in one line; it refuses to start
        print(f"error {exc}".replace("\n", " "), flush=True)
        return 1
    try:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(args[0])
        os.chmod(args[0], 0o600)
        listener.listen(128)
        listener.setblocking(False)
    except OSError as exc:
        trail.close()
        print(f"error cannot listen on {args[0]}: {exc}", flush=True)
        return 1
    server = RelayServer(trail, pipeline, listener, control)
    # Interrupts go to the service; the relay stops when its life line closes, after
    # the service's last events. SIGTERM stops it the same orderly way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    print(f"ready {trail.writer_id}", flush=True)
    try:
        server.serve()
    finally:
        listener.close()
        trail.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
