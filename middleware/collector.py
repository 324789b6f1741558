"""An explicit, process-wide setting of Python's cyclic collector for a guarded service.

The middleware never changes the collector: the collector's settings belong to the
whole process. A service that wants the measured gain (docs/performance.md,
"HTTP middleware") calls :func:`tune_collector` once, at the end of its start-up.
The sidecar's process is the guard's own: it freezes its start-up heap
(:func:`freeze_startup_heap`) unless ``sidecar.gc_freeze`` is off.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["freeze_startup_heap", "tune_collector"]

_log = logging.getLogger("guard.middleware")


def tune_collector(*, threshold: int = 20_000, freeze: bool = True) -> tuple[int, int, int]:
    """Raise the collector's first threshold and freeze what start-up built.

    ``gc.freeze()`` moves every object alive now (modules, the app, the policy) out
    of the collector's walks, so a full collection, which holds the interpreter lock
    while it walks and makes every request in flight wait, walks only what came
    after start-up; a first threshold of 20,000 instead of 700 allocations lets the
    objects of requests in flight die young instead of being walked and promoted.
    Call it once, when the service has started (e.g. in its lifespan's start-up),
    never from a library.

    Args:
        threshold: The first generation's threshold (Python's default is 700).
        freeze: Also call ``gc.freeze()``.

    Returns:
        The thresholds before the call (to restore them with ``gc.set_threshold``).

    Raises:
        ValueError: ``threshold`` is below 1 (0 would switch the collector off).
    """
    if threshold < 1:
        raise ValueError(f"threshold must be at least 1, not {threshold} "
                         "(0 would switch the cyclic collector off)")
    previous = gc.get_threshold()
    if freeze:
        gc.freeze()
    gc.set_threshold(threshold, previous[1], previous[2])
    _log.info("cyclic collector: first threshold %d (was %d)%s", threshold, previous[0],
              f", {gc.get_freeze_count()} start-up objects frozen" if freeze else "")
    return previous


def freeze_startup_heap() -> int:
    """Collect start-up's garbage, then freeze every object still alive.

    The frozen objects (modules, the policy, the app) are never walked by the
    collector again, so each full collection walks only what came after; the garbage
    is collected first so that none of it stays frozen for good. The sidecar calls
    it at the end of its start-up (``sidecar.gc_freeze``): the process is the guard's.

    Returns:
        How many objects are frozen now (``gc.get_freeze_count()``).
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
