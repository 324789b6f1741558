"""An explicit, process-wide setting of Python's cyclic collector for a guarded service.

The guard never changes the collector on its own: the collector's settings belong
to the whole process. A service that wants the measured gain (docs/performance.md,
"HTTP middleware") calls :func:`tune_collector` once, at the end of its start-up.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["tune_collector"]

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
