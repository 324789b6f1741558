"""Outcome events of proxied requests, queued for the audit trail off the next request's path."""

from __future__ import annotations

import asyncio
import contextvars
import logging

from guard._types import HttpContext
from middleware._enforce import GuardLike

_log = logging.getLogger("guard.sidecar")

FALLBACK_SECONDS = 0.001
"""With no next request to hide behind, queued outcomes go to the trail after this long."""


class PendingOutcomes:
    """Outcome events waiting to be handed to :meth:`Guard.enqueue_outcome`.

    Outcomes are the final status of a proxied ``write`` (a read's status is in
    its own decision event) and the ``aborted`` mark of an answer cut short.
    An outcome does not gate data flow (its decision was durable before any of
    the answer left), but building and queueing it is work on the event
    loop. Done right after a response, it delays the next request on the same
    loop; done by :meth:`flush_soon` from that next request, it runs while the
    request waits for its own durable decision event, when the loop is idle.
    A timer hands them over after ``FALLBACK_SECONDS`` when no request comes, and
    :meth:`flush` runs before the trail closes, so none is left behind. From
    there, the trail commits them with its next group commit. Each is handed over in
    the context of its own request, so the trace ids it gets are that request's.

    Args:
        guard: Where the outcomes are recorded.
    """

    __slots__ = ("_guard", "_queued", "_scheduled", "_timer")

    def __init__(self, guard: GuardLike) -> None:
        self._guard = guard
        self._queued: list[tuple[str, int, HttpContext, contextvars.Context]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False

    def add(self, decision_id: str, status: int, http: HttpContext) -> None:
        """Queue one outcome (on the event loop, in its request's context)."""
        self._queued.append((decision_id, status, http, contextvars.copy_context()))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FALLBACK_SECONDS, self.flush)

    def flush_soon(self) -> None:
        """Hand the queued outcomes over at the loop's next turn (the caller's next wait)."""
        if self._queued and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Hand every queued outcome to the audit trail now."""
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        queued, self._queued = self._queued, []
        for decision_id, status, http, context in queued:
            try:  # in the request's own context: its span, not the flushing request's
                recorded = context.run(self._guard.enqueue_outcome, decision_id, status, http)
            except Exception:  # one bad outcome must not take the others with it
                _log.exception("the outcome of decision %s was not recorded", decision_id)
                continue
            if recorded is False:
                _log.error("the outcome of decision %s was not recorded: the trail is closed",
                           decision_id)
