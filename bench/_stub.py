"""The guard's audit side stubbed out, for benchmarks that time everything else.

Never ship this: a guard that records nothing breaks the audit promise. A
benchmark subclasses :class:`NoAudit` and gives it ``decide`` (and whatever the
enforcement point reads, such as ``holder``); every commit is durable at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from guard._guard import Checked, Ruling
from guard._types import Decision, HttpContext, Request

EVENT_ID = "bench"
"""The event id every stubbed commit answers with."""

_IDLE = asyncio.new_event_loop()
"""For futures made outside a running loop (they only hold a result; it never runs)."""


class NoAudit:
    """A guard's recording methods, each answering at once as if durable."""

    def decide(self, request: Request, http: HttpContext | None = None, *,
               per_category: bool = False, current: Any = None) -> Ruling:
        raise NotImplementedError

    async def acheck(self, request: Request, http: HttpContext | None = None) -> Checked:
        return await self.acommit(self.decide(request, http))

    async def acommit(self, ruling: Ruling, status: int | None = None) -> Checked:
        return Checked(ruling.decision, EVENT_ID, ruling.categories)

    def begin_commit(self, ruling: Ruling, status: int | None = None) -> asyncio.Future[str]:
        """A commit already durable: the middleware's held start is released at once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = _IDLE
        done: asyncio.Future[str] = loop.create_future()
        done.set_result(EVENT_ID)
        return done

    def post(self, *_: object) -> bool:
        return True

    def enqueue_outcome(self, *_: object) -> bool:
        return True

    async def arecord_denial(self, request: Request, decision: Decision,
                             http: HttpContext | None = None, *,
                             detail: str | None = None, source: str | None = None
                             ) -> Checked:
        return Checked(decision, EVENT_ID)
