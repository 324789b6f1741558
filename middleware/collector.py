"""The start-up heap frozen out of Python's cyclic collector, and an explicit setting of it.

A guarded service holds each read's objects while its decision is committed, so
under concurrent requests they are promoted and feed full collections, which walk
the whole heap with the interpreter lock held (37-68 ms on the example service,
every request in flight waiting). ``GuardMiddleware`` therefore freezes the
start-up heap once, when the app's lifespan start-up is complete
(:func:`freeze_once`), unless ``gc_freeze=False`` or ``sidecar.gc_freeze`` is off;
the sidecar does the same in its own process. A full collection then walks only
what came after start-up. :func:`tune_collector` is the explicit form, with an
optional threshold. Nothing is frozen twice: a process whose heap is frozen
already (by another guarded app, the sidecar or the service itself) is left as it is.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["freeze_once", "freeze_startup_heap", "tune_collector"]

_log = logging.getLogger("guard.middleware")


def tune_collector(*, threshold: int | None = None, freeze: bool = True
                   ) -> tuple[int, int, int]:
    """Freeze what start-up built (the recommended setting); optionally raise the threshold.

    ``gc.freeze()``, after one ``gc.collect()`` so that no start-up garbage stays for
    good, moves every object alive now (modules, the app, the policy) out of the
    collector's walks: a full collection, which holds the interpreter lock while it
    walks and makes every request in flight wait, then walks only what came after
    start-up (0.1-0.5 ms instead of 30-180 ms on the example service), and nothing
    made later lives longer than it would. A first threshold above Python's 700
    (e.g. 20,000) also takes the young collections away, at the cost of letting
    reference cycles live up to that many allocations longer; it measured no
    better than the freeze alone (docs/performance.md, "HTTP middleware").
    ``GuardMiddleware`` already freezes when the app's start-up is complete; call this
    for the threshold, or where that freeze is off, once, when the service has
    started (e.g. in its lifespan's start-up), never from a library.

    Args:
        threshold: The first generation's threshold; None leaves it as it is
            (Python's default is 700).
        freeze: Collect, then call ``gc.freeze()``.

    Returns:
        The thresholds before the call (to restore them with ``gc.set_threshold``).

    Raises:
        ValueError: ``threshold`` is below 1 (0 would switch the collector off).
    """
    if threshold is not None and threshold < 1:
        raise ValueError(f"threshold must be at least 1, not {threshold} "
                         "(0 would switch the cyclic collector off)")
    previous = gc.get_threshold()
    frozen = freeze_startup_heap() if freeze else None
    if threshold is not None:
        gc.set_threshold(threshold, previous[1], previous[2])
    _log.info("cyclic collector: first threshold %d (was %d)%s", gc.get_threshold()[0],
              previous[0], f", {frozen} start-up objects frozen" if frozen is not None else "")
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


def freeze_once() -> int | None:
    """:func:`freeze_startup_heap`, unless this process's heap is frozen already.

    Returns:
        How many objects are frozen now; None when some were already (another guarded
        app in this process, the sidecar, or the service's own ``gc.freeze()``): then
        nothing is collected or frozen.

    ``gc.get_freeze_count()`` walks the frozen objects (CPython keeps no count): in a
    process nobody froze the list is empty; in one frozen before, the walk (4-25 ms for
    80,000-120,000 objects) is the price of leaving another freezer's choice alone, as
    nothing cheaper says whether anything is frozen.
    """
    if gc.get_freeze_count():
        return None
    return freeze_startup_heap()
