"""A proxied read's answer, held until its decision is durable (one record, with the status)."""

from __future__ import annotations

from starlette.types import Message, Send

from guard.audit._ids import new_event_id
from middleware._enforce import GuardLike, Outcome


class AuditUnavailableError(Exception):
    """The read's decision could not be made durable: nothing of the answer may leave."""


class Held:
    """When the decision of one allowed, proxied request is durable.

    A ``read`` comes from :func:`middleware._enforce.enforce` unrecorded
    (``Outcome.pending``): its id is made now, so the upstream's request can
    carry it, and the decision is recorded once, with the status the client is
    answered with, by :meth:`open` when that answer is about to start. A
    ``write`` was made durable by ``enforce`` before anything was forwarded.

    Args:
        guard: The guard that decided.
        outcome: How the request was judged (allowed).
    """

    __slots__ = ("_guard", "_ruling", "decision_id")

    def __init__(self, guard: GuardLike, outcome: Outcome) -> None:
        self._guard = guard
        self.decision_id = outcome.decision_id
        ruling = outcome.pending
        if ruling is not None and ruling.fields is not None:
            self.decision_id = ruling.fields["event_id"] = new_event_id()
        self._ruling = ruling

    @property
    def pending(self) -> bool:
        """The decision is not recorded yet (a read whose answer has not started)."""
        return self._ruling is not None

    async def open(self, status: int) -> str | None:
        """Record the decision with ``status`` (the first call only) and wait until durable.

        Returns:
            The decision's id.

        Raises:
            AuditUnavailableError: it cannot be made durable; the answer must be refused.
        """
        ruling = self._ruling
        if ruling is None:
            return self.decision_id
        self._ruling = None
        checked = await self._guard.acommit(ruling, status)
        if not (checked.decision.allowed and checked.decision_id):
            self.decision_id = None
            raise AuditUnavailableError
        return self.decision_id

    def send(self, send: Send) -> Send:
        """``send`` that holds the answer's start until :meth:`open` returned."""

        async def held(message: Message) -> None:
            if message["type"] == "http.response.start" and self._ruling is not None:
                await self.open(message["status"])
            await send(message)

        return held

    def abandon(self, status: int) -> None:
        """Queue the decision with ``status`` when no answer of the upstream's ever started."""
        ruling = self._ruling
        if ruling is not None:
            self._ruling = None
            self._guard.post(ruling, status)
