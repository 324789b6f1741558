"""``/healthz`` (the process answers) and ``/readyz`` (policy loaded, audit store writable)."""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response

from middleware.sidecar._state import Sidecar


async def healthz(request: HttpRequest) -> Response:
    """Alive: always 200 while the process serves, with the policy version in force."""
    sidecar: Sidecar = request.app.state.sidecar
    return JSONResponse(
        {"status": "alive", "policy_version": sidecar.holder.current.version},
        headers={"cache-control": "no-store"},
    )


async def readyz(request: HttpRequest) -> Response:
    """Ready: 200 when a policy is in force and the audit store takes writes, else 503.

    A rejected reload does not make the sidecar unready (the last good policy
    still decides), but its reason is shown until a later reload succeeds; nor
    does a lost connection to a PostgreSQL policy store (``policy_store_listening``
    says so while the watcher reconnects).
    """
    sidecar: Sidecar = request.app.state.sidecar
    audit_ok, audit_detail = sidecar.guard.ready()
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
    }
    if sidecar.policy_dir is None:
        body["policy_store_listening"] = bool(sidecar.reloader.listening)
    if sidecar.guard.register is not None:  # subjects with entries; following other writers
        body["subject_register"] = sidecar.guard.register.status()
    return JSONResponse(
        body, status_code=200 if audit_ok else 503, headers={"cache-control": "no-store"}
    )
