"""An audit trail written by a child process: the service only hands events over.

:class:`RelayTrail` has the recording interface of :class:`AuditTrail`, but the
store, the hash chain, the checkpoints and the group commit live in a relay
process (``guard/audit/_relay_server.py``) that it starts and owns. A call
returns, as with the in-process trail, only once the relay acknowledged that
the event is durable; when the relay cannot be reached the call fails and the
guard refuses (``audit_unavailable``). The hashing, row building and writing
then run on another core instead of sharing the service's interpreter lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from guard._errors import AuditUnavailableError
from guard.audit._event import AuditEvent, EventKind
from guard.audit._health import FailureLog, StoreRefusedError
from guard.audit._pipeline import trace_fields, utc_now
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
    event_to_wire,
    frame,
)

if TYPE_CHECKING:
    from guard.config import AuditSettings

_log = logging.getLogger("guard.audit")
_RESPAWN_INTERVAL = 1.0


class _Connection(asyncio.Protocol):
    """One event loop's connection to the relay; futures wait for their acknowledgement."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, ack_timeout: float, failures: FailureLog
    ) -> None:
        self.loop = loop
        self._failures = failures
        self.transport: asyncio.Transport | None = None
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.outbox: list[bytes] = []  # frames to send at the end of this loop iteration
        self.closed = False
        self._scheduled = False
        self._reader = FrameReader()
        self._ack_timeout = ack_timeout
        self._watching = False
        self._answered = False  # an acknowledgement arrived since the watchdog last looked

    def wait_for(self, msg_id: int) -> asyncio.Future[Any]:
        """A future for ``msg_id``'s acknowledgement; the watchdog fails it if none comes."""
        future: asyncio.Future[Any] = self.loop.create_future()
        self.waiting[msg_id] = future
        if not self._watching:
            self._watching = True
            self._answered = False
            self.loop.call_later(self._ack_timeout, self._watch)
        return future

    def _watch(self) -> None:
        """Fail the waiting futures when the relay answered nothing for a whole period."""
        if not self.waiting or self.closed:
            self._watching = False
        elif not self._answered:
            self._watching = False
            self.fail(f"the audit relay did not answer within {self._ack_timeout:g} s")
        else:
            self._answered = False
            self.loop.call_later(self._ack_timeout, self._watch)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._failures.succeeded()
        self.send_outbox()

    def send(self, data: bytes) -> None:
        """Queue a frame; the frames of one loop iteration go out in one write."""
        self.outbox.append(data)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.send_outbox)

    def send_outbox(self) -> None:
        self._scheduled = False
        if self.transport is not None and self.outbox:
            data = b"".join(self.outbox)
            self.outbox.clear()
            self.transport.write(data)

    def drain(self) -> bytes:
        """Send the outbox now; what could not be sent (not connected yet) is returned."""
        if self.transport is not None:
            self.send_outbox()
            return b""
        data = b"".join(self.outbox)
        self.outbox.clear()
        return data

    def data_received(self, data: bytes) -> None:
        try:
            batches = self._reader.feed(data)
        except WireError as exc:
            self.fail(f"unreadable answer from the audit relay: {exc}")
            return
        waiting = self.waiting
        self._answered = True
        for acks in batches:
            for msg_id, error, answer in acks:
                future = waiting.pop(msg_id, None)
                if future is None or future.done():
                    continue
                if error is None:
                    future.set_result(answer)
                else:
                    future.set_exception(StoreRefusedError(error))  # the relay logged it

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail("the audit relay closed the connection")

    def fail(self, why: str) -> None:
        """Fail every waiting future (fail closed) and stop using this connection."""
        if not self.closed:
            self._failures.failed(why)
        self.closed = True
        if self.outbox:
            _log.error("%d audit frame(s) were not sent: %s", len(self.outbox), why)
            self.outbox.clear()
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(AuditUnavailableError(why))
        if self.transport is not None:
            self.transport.close()


class _Blocking:
    """One thread's blocking connection to the relay (threads do not wait for each other)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self._reader = FrameReader()

    def call(self, msg_id: int, op: int, payload: Any) -> Any:
        """Send one message and wait for its acknowledgement; its answer.

        Raises:
            AuditUnavailableError: the relay refused it (the connection stays usable).
            OSError, WireError: the connection failed (it must not be used again).
        """
        self.sock.sendall(frame((msg_id, op, payload)))
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionResetError("the audit relay closed the connection")
            for acks in self._reader.feed(data):
                for ack_id, error, answer in acks:
                    if ack_id == msg_id:
                        if error is not None:
                            raise StoreRefusedError(error)  # the relay logged it
                        return answer


class RelayTrail:
    """Record audit events through a relay process that this object starts and stops.

    Args:
        settings: The audit settings the relay opens its trail with.
        start_timeout: Seconds to wait for the relay to report ``ready``.
        ack_timeout: Seconds a blocking call waits for its acknowledgement.

    Raises:
        AuditUnavailableError: the relay did not start (the reason is in the message).
    """

    def __init__(
        self, settings: AuditSettings, *, start_timeout: float = 30.0, ack_timeout: float = 30.0
    ) -> None:
        self._settings = settings
        self._start_timeout = start_timeout
        self._ack_timeout = ack_timeout
        self._dir = tempfile.mkdtemp(prefix="guard-audit-relay-")
        self.socket_path = os.path.join(self._dir, "relay.sock")
        self._ids = itertools.count(1)
        self._conns: dict[asyncio.AbstractEventLoop, _Connection] = {}
        self._lock = threading.Lock()  # the child process and the set of blocking connections
        self._local = threading.local()  # each thread's blocking connection
        self._blocking: set[_Blocking] = set()
        self._closed = False
        self._failures = FailureLog("audit relay")
        self._spawned_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        try:
            self._spawn()
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    # -- the relay process -------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start the relay and wait for its ``ready`` line (caller holds no connection)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        self._spawned_at = time.monotonic()
        # The relay imports this very package, wherever the service found it.
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "guard.audit._relay_server", self.socket_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, env=env,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            proc.stdin.write(self._settings.model_dump_json().encode() + b"\n")
            proc.stdin.flush()
            line = _read_line(proc.stdout, self._start_timeout)
        except (OSError, TimeoutError) as exc:
            _stop(proc, 5.0)
            raise AuditUnavailableError(f"the audit relay did not start: {exc}") from None
        if not line.startswith("ready"):
            _stop(proc, 5.0)
            why = line.removeprefix("error ").strip() or "it exited"
            raise AuditUnavailableError(f"the audit relay did not start: {why}")
        self._proc = proc

    def _ensure_running(self) -> None:
        """Restart a relay that died (at most once a second); the new one starts a new chain."""
        proc = self._proc
        if self._closed:
            raise AuditUnavailableError("the trail is closed")
        if proc is not None and proc.poll() is None:
            return
        if time.monotonic() - self._spawned_at < _RESPAWN_INTERVAL:
            raise AuditUnavailableError("the audit relay is not running")
        if proc is not None:
            _log.error("the audit relay exited with %s; starting a new one", proc.returncode)
            _stop(proc, 1.0)
        self._proc = None
        self._spawn()

    @property
    def pid(self) -> int | None:
        """The relay process's id, while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- blocking calls ----------------------------------------------------------------------

    def _call(self, op: int, payload: Any = None) -> Any:
        """Send one message on this thread's blocking connection; wait for its answer."""
        try:
            answer = self._thread_connection().call(next(self._ids), op, payload)
        except (OSError, WireError) as exc:
            self._drop_thread_connection()
            why = f"the audit relay did not answer: {exc}"
            self._failures.failed(why)
            raise AuditUnavailableError(why) from None
        except StoreRefusedError:
            raise
        except AuditUnavailableError as exc:  # the relay is not running and cannot be started
            self._failures.failed(str(exc))
            raise
        self._failures.succeeded()
        return answer

    def _thread_connection(self) -> _Blocking:
        conn: _Blocking | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                self._ensure_running()
                conn = _Blocking(self.socket_path, self._ack_timeout)
                self._blocking.add(conn)
            self._local.conn = conn
        return conn

    def _drop_thread_connection(self) -> None:
        conn: _Blocking | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._lock:
                self._blocking.discard(conn)
            conn.sock.close()

    @property
    def writer_id(self) -> str:
        """The id of the chain the relay is writing now."""
        return str(self._call(WRITER))

    def record_fields(self, kind: EventKind, fields: dict[str, Any]) -> str:
        """Have the relay build the event from ``fields`` and make it durable; its id.

        ``fields`` are those of :class:`AuditPipeline` (``subject_id`` raw: the relay
        pseudonymises it); the time and the current trace ids are added here.

        Raises:
            AuditUnavailableError: the relay could not record it, or could not be reached.
        """
        return str(self._call(BUILD, _payload(kind, fields)))

    async def arecord_fields(self, kind: EventKind, fields: dict[str, Any]) -> str:
        """Like :meth:`record_fields` without blocking the event loop."""
        return str(await self._acall(BUILD, _payload(kind, fields)))

    def post_fields(self, kind: EventKind, fields: dict[str, Any]) -> None:
        """Like :meth:`post`, for an event the relay builds from ``fields``."""
        self._hand_over(BUILD_POST, BUILD, _payload(kind, fields))

    def record(self, event: AuditEvent) -> None:
        """Return once the relay made ``event`` durable.

        Raises:
            AuditUnavailableError: the relay could not record it, or could not be reached.
        """
        self._call(RECORD, event_to_wire(event))

    def flush(self, timeout: float = 30.0) -> None:
        """Return once every event handed over before the call is written (or has failed).

        Raises:
            AuditUnavailableError: the relay could not be reached.
        """
        self._send_outboxes(timeout)
        self._call(FLUSH)

    def _send_outboxes(self, timeout: float) -> None:
        """Send the frames event loops still hold, so the relay reads them before a flush.

        Frames of a loop whose connection is not made yet go over the blocking one.
        """
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, conn in list(self._conns.items()):
            if not conn.outbox:
                continue
            if loop is running:
                left = conn.drain()
            else:
                drained: list[bytes] = []
                sent = threading.Event()

                def drain(conn: _Connection = conn, drained: list[bytes] = drained,
                           sent: threading.Event = sent) -> None:
                    drained.append(conn.drain())
                    sent.set()

                try:
                    loop.call_soon_threadsafe(drain)
                except RuntimeError:  # that loop is closed: nothing more will leave it
                    continue
                sent.wait(timeout)
                left = b"".join(drained)
            if left:
                self._send_raw(left)

    def _send_raw(self, data: bytes) -> None:
        """Send frames on this thread's blocking connection, not awaiting acknowledgements."""
        try:
            self._thread_connection().sock.sendall(data)
        except OSError as exc:
            self._drop_thread_connection()
            raise AuditUnavailableError(f"the audit relay did not answer: {exc}") from None

    def ready(self) -> tuple[bool, str]:
        """Can the relay make events durable right now? ``(ok, why)``."""
        try:
            ok, why = self._call(READY)
        except AuditUnavailableError as exc:
            return False, str(exc)
        return bool(ok), f"{why} (audit relay pid {self.pid})"

    # -- the event loop ----------------------------------------------------------------------

    def _connection(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        conn = self._conns.get(loop)
        if conn is not None and not conn.closed:
            return conn
        with self._lock:
            self._ensure_running()
        for old in [old for old in self._conns if old.is_closed()]:
            del self._conns[old]
        conn = self._conns[loop] = _Connection(loop, self._ack_timeout, self._failures)
        task = loop.create_task(loop.create_unix_connection(lambda: conn, self.socket_path))
        task.add_done_callback(lambda t: _connected(conn, t))
        return conn

    async def arecord(self, event: AuditEvent) -> None:
        """Like :meth:`record` without blocking the event loop."""
        await self._acall(RECORD, event_to_wire(event))

    def post(self, event: AuditEvent) -> None:
        """Hand ``event`` to the relay without waiting for it to be written.

        On an event loop it is sent at once and committed with the relay's next
        batch; a failure is logged by the relay. Without a running loop this
        waits, like :meth:`record`.

        Raises:
            AuditUnavailableError: the relay cannot be reached.
        """
        self._hand_over(POST, RECORD, event_to_wire(event))

    async def _acall(self, op: int, payload: Any) -> Any:
        """Send one message on this loop's connection; await its acknowledged answer."""
        try:
            conn = self._connection(asyncio.get_running_loop())
        except AuditUnavailableError as exc:
            self._failures.failed(str(exc))
            raise
        msg_id = next(self._ids)
        future = conn.wait_for(msg_id)
        conn.send(frame((msg_id, op, payload)))
        return await future

    def _hand_over(self, op: int, blocking_op: int, payload: Any) -> None:
        """Send ``op`` on the running loop's connection, unanswered; without a loop, wait
        for ``blocking_op``'s acknowledgement instead."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._call(blocking_op, payload)
            return
        self._connection(loop).send(frame((next(self._ids), op, payload)))

    def close(self) -> None:
        """Stop the relay: it commits what it holds, writes the closing checkpoint and exits."""
        if self._closed:
            return
        try:
            self._send_outboxes(5.0)  # events posted on a loop and not yet sent
        except AuditUnavailableError as exc:
            _log.error("audit events posted before closing were not sent: %s", exc)
        self._closed = True
        for loop, conn in list(self._conns.items()):
            if conn.transport is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed already
                    loop.call_soon_threadsafe(conn.transport.close)
        self._conns.clear()
        with self._lock:
            for blocking in self._blocking:
                blocking.sock.close()
            self._blocking.clear()
            if self._proc is not None:
                _stop(self._proc, 30.0)
                if self._proc.returncode:
                    _log.error("the audit relay exited with %s", self._proc.returncode)
                self._proc = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RelayTrail:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _payload(kind: EventKind, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(kind, fields)`` with this moment's time and this context's trace ids."""
    fields["ts"] = utc_now()
    fields.update(trace_fields())
    return kind.value, fields


def _connected(conn: _Connection, task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        conn.fail("cannot reach the audit relay: cancelled")
    elif task.exception() is not None:
        conn.fail(f"cannot reach the audit relay: {task.exception()}")


def _read_line(stream: IO[bytes], timeout: float) -> str:
    """One line from a child's stdout, or TimeoutError."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no answer within {timeout:g} s")
    return stream.readline().decode(errors="replace")


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Close the relay's life line and wait for it to exit (kill it after ``timeout``)."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
