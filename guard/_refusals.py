"""A bound on the refusals recorded one by one for requests that prove no caller.

Anyone who can reach the port can be refused, and each refusal was an event: a
client with no credentials could fill the audit filesystem to ``audit.reserve_mb``,
after which every request is refused. Refusals of requests that carry no verified
caller are recorded in full up to ``audit.anonymous_refusals_per_source`` per source
and reason in each window (and ``anonymous_refusals_per_window`` of all sources
together); the rest are counted, by source, reason and route, in one ``refusals``
event at the window's end, so no refusal goes uncounted. A verified caller's
decisions, and every allowed one, never come here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from guard.audit._event import utc_now

if TYPE_CHECKING:
    from guard.config import AuditSettings

MAX_KEYS = 256
"""(source, reason, route) counts a summary names; sources past it are counted as ``*``."""
MAX_SOURCE = 64
"""A source is at most this long (an address; anything else is cut)."""


def source_of(peer: str | None) -> str:
    """The source a refusal is counted under: the address, an IPv6 one as its /64.

    One host usually holds a whole IPv6 /64, so counting single addresses there
    would bound nothing.
    """
    if not peer:
        return "-"
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer[:MAX_SOURCE]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class RefusalBudget:
    """Which refusals without a verified caller are recorded one by one; the others counted.

    Used on one event loop (the enforcement point's). A window starts at the first
    refusal after the last one ended; the summary of a window that counted any is
    handed to ``record`` at its end (a timer on the loop), or by :meth:`flush`.

    Args:
        per_source: Refusals recorded one by one per source and reason in a window.
        per_window: ... and of all sources together.
        seconds: The window's length.
        record: Takes a summary's event fields (kind ``refusals``).
        clock: Monotonic seconds (tests may pass their own).
    """

    def __init__(self, per_source: int, per_window: int, seconds: float,
                 record: Callable[[dict[str, Any]], None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_source = per_source
        self.per_window = per_window
        self.seconds = seconds
        self._record = record
        self._clock = clock
        self._start = float("-inf")
        self._since = ""
        self._full: dict[tuple[str, str], int] = {}
        self._recorded = 0
        self._counted: dict[tuple[str, str, str], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def for_audit(cls, audit: AuditSettings, record: Callable[[dict[str, Any]], None]
                  ) -> RefusalBudget | None:
        """The budget ``audit``'s settings ask for; None when every refusal is recorded."""
        if audit.anonymous_refusals_per_source <= 0:
            return None
        return cls(audit.anonymous_refusals_per_source, audit.anonymous_refusals_per_window,
                   audit.anonymous_refusals_window_seconds, record)

    def admit(self, source: str, reason: str, route: str) -> bool:
        """True: record this refusal in full; False: it is counted in the window's summary.

        Args:
            source: Where it came from (:func:`source_of`).
            reason: The refusal's reason code.
            route: Its audited route (a template, ``<undeclared>``, ``<refused>``).
        """
        now = self._clock()
        if now - self._start >= self.seconds:
            self.flush()
            self._start, self._since = now, utc_now()
        key = (source, reason)
        full = self._full.get(key, 0)
        if full < self.per_source and self._recorded < self.per_window:
            self._full[key] = full + 1
            self._recorded += 1
            return True
        counted = (source, reason, route)
        if counted not in self._counted and len(self._counted) >= MAX_KEYS:
            counted = ("*", reason, route)
        self._counted[counted] = self._counted.get(counted, 0) + 1
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # off a loop: the next refusal or flush() records it
                pass
            else:
                self._timer = loop.call_at(loop.time() + self._start + self.seconds - now,
                                           self._due)
        return False

    def _due(self) -> None:
        self._timer = None
        if self._clock() - self._start >= self.seconds:
            self.flush()
        elif self._counted:  # a clock that runs slower than the loop's: look again
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._start + self.seconds - self._clock(), self._due)

    def flush(self) -> None:
        """Hand over the summary of the window so far (if it counted any) and end the window."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        counted, self._counted = self._counted, {}
        recorded, self._recorded = self._recorded, 0
        self._full = {}
        self._start = float("-inf")
        if not counted:
            return
        by = [{"source": source, "reason": reason, "route": route, "count": count}
              for (source, reason, route), count in sorted(counted.items())]
        self._record({
            "allowed": False,
            "detail": orjson.dumps({
                "since": self._since, "seconds": self.seconds, "recorded": recorded,
                "counted": sum(counted.values()), "by": by,
            }).decode(),
        })
