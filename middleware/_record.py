"""The audit record of one allowed request, and the hold on a read's response.

A read's decision is committed with its status when the app starts its response:
the commit is queued at once and the start is held. A body that comes whole (one
``http.response.body`` without ``more_body``, at most :data:`HELD_BODY` bytes) is
held too, and the app's call goes on; the response leaves once the decision is
durable: when the app has returned (its frames and objects are gone by then), or,
if the app is still running (a background task after its response), as soon as the
commit is durable. A streamed or larger body, a file (``http.response.pathsend``)
or any other message waits for the decision where it is sent, then flows. A
decision that cannot be made durable replaces the whole response with a 403
``audit_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN
from starlette.types import Message, Receive, Scope, Send

from guard._guard import Ruling
from guard._types import Reason, denial
from guard.audit._otel import decision_attributes
from middleware._enforce import GuardLike, Outcome, http_context
from middleware._private import private_answer
from middleware.problem import problem_response

__all__ = ["HELD_BODY", "Record"]

_log = logging.getLogger("guard.middleware")
_DECISION_HEADER = b"x-guard-decision-id"
HELD_BODY = 64 * 1024
"""The largest whole response body held while its read's decision is committed (bytes)."""


class Record:
    """The audit record of one allowed request: its decision, then (if needed) its outcome.

    The record is the ``send`` the app is given (it holds a read's response until
    its decision is durable): one object per request, no closure, and while a whole
    response waits for its decision no frame of its own (the middleware awaits the
    commit, :meth:`returned`, and sends what :meth:`out` hands it): fewer objects alive
    per request in flight, for the cyclic collector to walk, and no coroutine of the
    record's to send it.

    Args:
        guard: The guard.
        outcome: How the request was judged.
        ruling: An allowed read's ruling, still to record with its response's status.
        scope: The request's scope.
        receive: The request's ``receive``.
        send: The server's ``send``.
        span: The current (server) span: the decision's id is put on it.
    """

    __slots__ = ("_body", "_early", "_flusher", "_guard", "_judged", "_outcome",
                 "_pending", "_read", "_receive", "_refused", "_returned", "_scope",
                 "_send", "_span", "_start", "_verdict", "decision_id", "failed",
                 "finished", "settled", "status")

    def __init__(  # noqa: PLR0917 - positional: once per request
            self, guard: GuardLike, outcome: Outcome, ruling: Ruling | None,
            scope: Scope, receive: Receive, send: Send, span: trace.Span) -> None:
        self._guard = guard
        self._outcome = outcome
        self._scope = scope
        self._receive = receive
        self._send = send
        self._pending = ruling
        self._read = ruling.request if ruling is not None else None
        """An allowed read's request (its decision is recorded with the response's status);
        the ruling itself is not kept once queued (one object fewer per read waiting)."""
        self._verdict: asyncio.Future[str] | None = None
        self._judged = False
        self._span = span
        self.decision_id = outcome.decision_id
        self.status: int | None = None
        """The status the response started with."""
        self.failed = False
        """The read's decision could not be made durable: nothing of the app's may leave."""
        self.finished = False
        """The response's last message went to the client."""
        self._refused = False
        self._early: list[Message] | None = None
        """Messages sent before the response's start (extensions): held like the start."""
        self._start: Message | None = None
        """A read's start, held until its decision is durable."""
        self._body: Message | None = None
        """A read's whole body, held with its start."""
        self._flusher: asyncio.Task[None] | None = None
        self._returned = False
        self.settled = False
        """A read's whole response went out, its decision durable: :meth:`close` is done."""

    # -- the decision ------------------------------------------------------------------------

    def _begin(self, status: int) -> asyncio.Future[str] | None:
        """Queue the read's decision with ``status`` (once); the future of its id."""
        if self.status is None:
            self.status = status
        ruling = self._pending
        if ruling is not None:
            self._pending = None
            self._verdict = self._guard.begin_commit(ruling, status)
        return self._verdict

    def _judge(self) -> None:
        """Take the commit's result (it is done): the decision's id, or the refusal."""
        verdict = self._verdict
        if self._judged or verdict is None:
            return
        self._judged = True
        try:
            decision_id = verdict.result()
        except BaseException:  # noqa: S110 - failed or cancelled: refused below
            pass
        else:
            self.decision_id = decision_id
            if self._span.is_recording():
                self._span.set_attribute("guard.decision_id", decision_id)
            return
        self.failed = True
        read, decision = self._read, self._outcome.decision
        if self._span.is_recording() and read is not None:
            self._span.set_attributes(decision_attributes(denial(
                Reason.AUDIT_UNAVAILABLE, read, decision.policy_version if decision else "")))
        _log.error("a decision for %s could not be made durable: the response is refused",
                   self._outcome.route or "<undeclared>")

    def _awaited(self, status: int) -> asyncio.Future[str] | None:
        """Queue the decision with ``status`` (once); its future if it is still to be awaited.

        None when it is judged already (then :meth:`_judge` has taken its result).
        """
        verdict = self._begin(status)
        if verdict is None or verdict.done():
            self._judge()
            return None
        return verdict

    async def open(self, status: int) -> str | None:
        """Make the decision durable with ``status`` (once); its id, None if it cannot be."""
        verdict = self._awaited(status)
        if verdict is not None:
            try:  # noqa: SIM105 - no suppress() object alive across the wait
                await verdict
            except Exception:  # noqa: S110 - judged below
                pass
            self._judge()
        return self.decision_id

    # -- the response ------------------------------------------------------------------------

    async def __call__(self, message: Message) -> None:
        """The ``send`` the app is given: holds a read's response until its decision is durable."""
        send = self._send
        if self._refused:  # replaced by a refusal: nothing of the app's leaves
            return
        kind = message["type"]
        if self._start is not None:  # a read's start, held
            if self._body is None:
                if (kind == "http.response.body" and not message.get("more_body", False)
                        and len(message.get("body", b"")) <= HELD_BODY):
                    self._body = message  # whole: it leaves once the decision is durable
                    verdict = self._verdict
                    if verdict is None or verdict.done():
                        await self._release()
                    else:
                        verdict.add_done_callback(self._durable)
                    return
                await self._release()  # streamed, large, a file: wait here, then flow
            else:  # after the whole body (not a valid ASGI order): the server judges
                await self._released()
            if self._refused:
                return
        elif kind == "http.response.start":
            ruling = self._pending
            if ruling is not None:  # a read: its decision is queued now, the start held
                self._pending = None
                status = self.status = message["status"]
                self._verdict = self._guard.begin_commit(ruling, status)
                self._start = message
                return
            verdict = self._begin(message["status"])
            if verdict is not None and not self._judged:
                self._start = message
                return
            if self.failed:  # judged already (a minimising route's refusal)
                self._refused = True
                await self._refuse()
                return
            message = self._stamped(message)
            early, self._early = self._early, None
            for held in early or ():
                await send(held)
        elif self._pending is not None and kind.startswith("http."):
            # before the start (an extension such as early hints): nothing leaves
            # before the read's decision is durable, so it waits for the start
            if self._early is None:
                self._early = []
            self._early.append(message)
            return
        elif self.status is None and kind.startswith("websocket."):
            # accepted: 101; refused by the app: its denial response's status, or 403
            status = 101 if kind == "websocket.accept" else int(message.get("status", 403))
            await self.open(status)
            if self.failed:
                self._refused = True
                await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})
                return
            if kind == "websocket.http.response.start":  # an HTTP answer: as every judged one
                message = self._stamped(message)
        await send(message)
        if kind == "http.response.pathsend" or (
                kind == "http.response.body" and not message.get("more_body", False)):
            self.finished = True

    def _stamped(self, start: Message) -> Message:
        """``start`` as no shared cache may keep it, with the decision's id (when it has one).

        The app's own message is left as it was (:func:`private_answer`).
        """
        headers = private_answer(start.get("headers", ()))
        decision_id = self.decision_id
        if decision_id:
            headers.append((_DECISION_HEADER, decision_id.encode()))
        stamped = start.copy() if type(start) is dict else dict(start)  # one dict, not two
        stamped["headers"] = headers
        return stamped

    def _durable(self, _verdict: asyncio.Future[str]) -> None:
        """The commit is done while the app still runs (a background task): answer now."""
        if not self._returned and self._flusher is None and self._start is not None:
            self._flusher = asyncio.ensure_future(self._release())

    async def _released(self) -> None:
        """Return once the held response went out (sent here, or by the task sending it)."""
        flusher = self._flusher
        if flusher is not None:
            await flusher
        elif self._start is not None:
            await self._release()

    async def _release(self, closing: bool = False) -> None:
        """Wait for the decision; send the held start, messages and body, or the refusal.

        Args:
            closing: Called by :meth:`close` (the app is done): a response handed over and
                not all sent (the client went away) gets its ``aborted`` outcome here.
        """
        start = self._start
        if start is None:
            return
        verdict = self._verdict
        if verdict is None:  # not queued yet (not a held read's start): queue it now
            verdict = self._awaited(self.status if self.status is not None else 500)
        if verdict is not None and not verdict.done():
            # awaited here, not in open(): one frame less while it waits
            try:  # noqa: SIM105 - no suppress() object alive across the wait
                await verdict
            except Exception:  # noqa: S110 - judged below
                pass
        if not self._judged and verdict is not None:
            try:
                decision_id = verdict.result()
            except BaseException:  # failed or cancelled: refused (judged there)
                self._judge()
            else:  # durable: its id (what _judge does, inline)
                self._judged = True
                self.decision_id = decision_id
                span = self._span
                if span is not INVALID_SPAN and span.is_recording():  # no call without a span
                    span.set_attribute("guard.decision_id", decision_id)
        if self._start is None:  # sent meanwhile (by the task answering early)
            return
        self._start = None
        try:
            if self.failed:
                self._refused = True
                await self._refuse()
                return
            send = self._send
            early = self._early
            if early is not None:
                self._early = None
                for held in early:
                    await send(held)
            await send(self._stamped(start))
            body = self._body
            if body is not None:
                self._body = None
                await send(body)
                self.finished = True
                self.settled = (self._read is not None and self._flusher is None
                                and self._pending is None)
        except BaseException:
            if closing and not self.finished:  # handed over, not all sent
                self._record_outcome(self.status if self.status is not None else 500,
                                     aborted=True)
            raise

    async def _refuse(self) -> None:
        """Send a 403 ``audit_unavailable`` in place of the app's response."""
        decision = self._outcome.decision
        response = problem_response(403, Reason.AUDIT_UNAVAILABLE,
                                    decision.purpose if decision else None,
                                    decision.categories if decision else (), None)
        await response(self._scope, self._receive, self._send)
        self.finished = True

    # -- the end -----------------------------------------------------------------------------

    def returned(self) -> asyncio.Future[str] | None:
        """The app is done: the commit to await before :meth:`close`, if its response waits.

        A whole response held (a read's usual answer) waits for its decision in the
        caller's own frame, so no frame or coroutine of the record's is alive meanwhile
        (fewer objects for the cyclic collector to walk); :meth:`close` then sends it.
        None when nothing is to be awaited first.
        """
        self._returned = True
        verdict = self._verdict
        if (self._flusher is None and self._start is not None and self._body is not None
                and verdict is not None):
            # answered by close(): no early answer (its callback would run for nothing)
            verdict.remove_done_callback(self._durable)
            return None if verdict.done() else verdict
        return None

    def out(self) -> tuple[Message, Message] | None:
        """The app is done and the commit awaited (after :meth:`returned`): a whole response
        held, its decision durable, to send now (its start stamped), or None: :meth:`close`.

        Taken out of the record: the caller sends the two messages itself (no coroutine of
        the record's), sets :attr:`finished` once both went out, and calls :meth:`cut_off`
        if sending them fails.
        """
        verdict = self._verdict
        start, body = self._start, self._body
        if (start is None or body is None or verdict is None or self._flusher is not None
                or self._early is not None or self._judged or not verdict.done()):
            return None
        try:
            decision_id = verdict.result()  # durable: its id (what _judge does, inline)
        except BaseException:  # failed or cancelled: refused by close()
            return None
        self._judged = True
        self.decision_id = decision_id
        span = self._span
        if span is not INVALID_SPAN and span.is_recording():  # no call without a span
            span.set_attribute("guard.decision_id", decision_id)
        try:
            stamped = self._stamped(start)
        except Exception:  # headers that are not pairs: close() fails sending them, and says so
            return None
        self._start = self._body = None
        return stamped, body

    def cut_off(self) -> None:
        """Sending what :meth:`out` gave failed (the client went away): its ``aborted`` outcome."""
        if not self.finished:
            self._record_outcome(self.status if self.status is not None else 500, aborted=True)

    def close(self, http: bool) -> Coroutine[Any, Any, None]:
        """The app is done (after :meth:`returned`): send a held response, record what is not yet.

        A whole response held is sent by :meth:`_release` itself; anything else is
        :meth:`_close`'s.

        Args:
            http: An HTTP response (one that can break off mid-body), not a WebSocket.
        """
        if self._flusher is None and self._start is not None and self._body is not None:
            return self._release(closing=True)
        return self._close(http)

    async def _close(self, http: bool) -> None:
        """What :meth:`close` leaves: a read that never started, an early answer, the outcome.

        Args:
            http: An HTTP response (one that can break off mid-body), not a WebSocket.
        """
        guard = self._guard
        ruling = self._pending
        if ruling is not None:  # no response started (the app failed): nothing left
            self._pending = None
            try:
                await guard.acommit(ruling, 500)
            except BaseException:  # cancelled meanwhile: queue it rather than lose it
                guard.post(ruling, 500)
                raise
            return
        if self._flusher is not None:
            try:  # a whole response, out once durable: sent by the early answer
                await self._flusher
            except BaseException:
                self._flusher.cancel()
                if self._start is None and not self.finished:  # handed over, not all sent
                    self._record_outcome(self.status if self.status is not None else 500,
                                         aborted=True)
                raise
        elif self._start is not None:  # the app ended before its body: nothing of it left
            self._start = None  # the server answers 500 (as to an app that failed at once)
            await self.open(500)
            self._record_outcome(500, aborted=False)
            return
        if self.failed or self.decision_id is None:
            return
        aborted = http and self.status is not None and not self.finished
        if self._read is not None and not aborted:  # the decision carries the status sent
            return
        self._record_outcome(self.status if self.status is not None else 500, aborted=aborted)

    def _record_outcome(self, status: int, *, aborted: bool) -> None:
        """Queue the outcome event of the decision (its final status, or a cut-off answer)."""
        decision_id = self.decision_id
        if self.failed or decision_id is None:
            return
        method = self._scope.get("method", "GET")  # a WebSocket's handshake is a GET
        outcome = http_context(method, self._outcome.route or "", status, aborted)
        try:
            if not self._guard.enqueue_outcome(decision_id, status, outcome):
                _log.error("could not queue status %s for decision %s", status, decision_id)
        except Exception:
            _log.exception("could not record status %s for decision %s", status, decision_id)
