"""Log lines anyone can cause at the console, bounded: the log is on a disk too.

The sign-in pages serve clients with no credentials; a line per refused sign-in let any
of them write the service's log as fast as it answered. Each kind of such line is written
once a window; the others are counted in the next one written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["Quiet"]


class Quiet:
    """One kind of log line a client with no credentials causes (a refused sign-in).

    The first in each window of ``seconds`` is written; the others are counted and named
    in the first line of a later window (``… (and N more like it before)``).

    Args:
        logger: Where the lines go.
        seconds: The window's length.
        clock: Monotonic seconds (tests may pass their own).
    """

    __slots__ = ("_clock", "_logger", "_more", "_seconds", "_until")

    def __init__(self, logger: logging.Logger, seconds: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._seconds = seconds
        self._clock = clock
        self._until = float("-inf")
        self._more = 0

    def log(self, level: int, message: str, *args: object) -> None:
        """Write ``message % args`` at ``level`` unless one was written in this window (counted)."""
        now = self._clock()
        if now < self._until:
            self._more += 1
            return
        more, self._more = self._more, 0
        self._until = now + self._seconds
        if more:
            self._logger.log(level, message + " (and %d more like it before)", *args, more)
        else:
            self._logger.log(level, message, *args)
