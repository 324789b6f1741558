"""``/healthz`` (the process answers) and ``/readyz`` (policy loaded, audit store writable).

Neither ever blocks the event loop: ``/readyz`` proves the audit trail writable
in a worker thread (:class:`Readiness`), shares one probe between concurrent
calls, and answers 503 when the probe takes longer than ``wait`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from middleware._disclose import proves_a_caller, readiness_view
from middleware.sidecar._state import Sidecar

PROBE_WAIT_SECONDS = 2.0
"""How long ``/readyz`` waits for the audit probe before answering 503."""
PROBE_FRESH_SECONDS = 1.0
"""How long a probe's answer serves later ``/readyz`` calls."""


class Readiness:
    """The answer of a blocking readiness probe, run off the event loop.

    Calls within ``fresh`` seconds of the last answer get it again; otherwise one
    probe runs in a worker thread, and every call that arrives meanwhile awaits
    that same probe (a hung store costs one thread, not one per call). A call
    waits at most ``wait`` seconds; the probe goes on and its answer serves the
    next call.

    Args:
        probe: Blocking; ``(ok, why)``.
        fresh: Seconds an answer is reused (default :data:`PROBE_FRESH_SECONDS`).
        wait: Seconds a call waits for a probe in progress (default :data:`PROBE_WAIT_SECONDS`).
    """

    def __init__(
        self,
        probe: Callable[[], tuple[bool, str]],
        *,
        fresh: float | None = None,
        wait: float | None = None,
    ) -> None:
        self._probe = probe
        self._fresh = PROBE_FRESH_SECONDS if fresh is None else fresh
        self._wait = PROBE_WAIT_SECONDS if wait is None else wait
        self._answer: tuple[float, bool, str] | None = None
        self._running: asyncio.Future[tuple[bool, str]] | None = None
        self._started = 0.0

    @property
    def probing(self) -> bool:
        """True while a probe runs in a worker thread."""
        return self._running is not None and not self._running.done()

    def _run(self) -> tuple[bool, str]:
        try:
            ok, why = self._probe()
        except Exception as exc:  # fail closed: a probe that breaks is a failed probe
            ok, why = False, f"readiness probe failed: {exc}"
        self._answer = (time.monotonic(), ok, why)
        return ok, why

    async def check(self) -> tuple[bool, str]:
        """``(ok, why)``: the fresh answer, or the probe's, or a timeout's (not ok)."""
        answer = self._answer
        if answer is not None and time.monotonic() - answer[0] < self._fresh:
            return answer[1], answer[2]
        running = self._running
        loop = asyncio.get_running_loop()
        if running is None or running.done() or running.get_loop() is not loop:
            running = self._running = loop.run_in_executor(None, self._run)
            self._started = time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(running), self._wait)
        except TimeoutError:
            return False, (
                f"audit readiness probe has not answered for "
                f"{time.monotonic() - self._started:.1f} s"
            )


async def healthz(request: HttpRequest) -> Response:
    """Alive: always 200 while the process serves, with the policy version in force."""
    sidecar: Sidecar = request.app.state.sidecar
    return JSONResponse(
        {"status": "alive", "policy_version": sidecar.holder.current.version},
        headers={"cache-control": "no-store"},
    )


async def readyz(request: HttpRequest) -> Response:
    """Ready: 200 when a policy is in force and the audit store takes writes, else 503.

    The audit trail's state is proven by a real append (see ``JournalTrail.ready``),
    off the event loop. A rejected reload does not make the sidecar unready (the
    last good policy still decides), but its reason is shown until a later reload
    succeeds; nor does a key file that is unreadable or invalid (its last good
    keys verify; ``key_files_error`` says why, or that a deleted file's keys no
    longer verify); nor does a lost connection to a PostgreSQL policy store
    (``policy_store`` says since when, and why, while the watcher reconnects).
    A request that proves no caller gets every text without the file-system paths and
    URLs it names (:func:`readiness_view`): the port serves anyone.
    """
    sidecar: Sidecar = request.app.state.sidecar
    readiness = sidecar.readiness
    if readiness is None:
        readiness = sidecar.readiness = Readiness(sidecar.guard.ready)
    audit_ok, audit_detail = await readiness.check()
    last = sidecar.reloader.last
    body: dict[str, object] = {
        "status": "ready" if audit_ok else "not_ready",
        "policy_version": sidecar.holder.current.version,
        "policy_source": "postgresql" if sidecar.policy_dir is None else str(sidecar.policy_dir),
        "audit": {"ok": audit_ok, "detail": audit_detail},
        "last_reload": None
        if last is None
        else {"at": last.at, "trigger": last.trigger, "ok": last.ok, "version": last.version},
        "last_reload_error": sidecar.reloader.last_error,
        "development_mode": sidecar.auth.development,
        "key_files_error": sidecar.auth.key_files_error,
    }
    if sidecar.policy_dir is None:
        store = sidecar.reloader.store
        body["policy_store_listening"] = bool(sidecar.reloader.listening)
        body["policy_store"] = {
            "listening": bool(sidecar.reloader.listening),
            "connected_at": store.connected_at,
            "lost_at": store.lost_at,
            "error": store.error,
        }
        body["policy_skipped_at_start"] = [
            {"id": skipped.id, "version": skipped.version, "error": skipped.error}
            for skipped in sidecar.reloader.skipped_at_start
        ]
    if sidecar.guard.register is not None:  # subjects with entries; following other writers
        body["subject_register"] = sidecar.guard.register.status()
    return JSONResponse(
        readiness_view(body, proves_a_caller(sidecar.auth, request)),
        status_code=200 if audit_ok else 503, headers={"cache-control": "no-store"})
