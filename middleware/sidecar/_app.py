"""The sidecar as a Starlette app: health, check endpoint, decision API, reverse proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import traceback
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guard._types import Reason
from guard.config import Settings, load_settings
from middleware._enforce import Outcome, enforce, http_context
from middleware._minimise import DEFAULT_MAX_BODY, Minimiser
from middleware.collector import freeze_startup_heap
from middleware.problem import problem_response
from middleware.sidecar._check import (
    CALLER_HEADER,
    DECISION_HEADER,
    PURPOSE_HEADER,
    CheckEndpoint,
)
from middleware.sidecar._decide_api import decide_endpoint
from middleware.sidecar._framing import AMBIGUOUS_FRAMING, framing_ok
from middleware.sidecar._headers import judged_headers
from middleware.sidecar._health import healthz, readyz
from middleware.sidecar._held import AuditUnavailableError, Held
from middleware.sidecar._openapi import openapi_document
from middleware.sidecar._outcomes import PendingOutcomes
from middleware.sidecar._paths import judgeable_path
from middleware.sidecar._problem import AMBIGUOUS_TARGET, sidecar_problem
from middleware.sidecar._proxy import (
    ClientGoneError,
    Proxy,
    UpstreamAbortedError,
    UpstreamError,
)
from middleware.sidecar._refuse import refuse_target
from middleware.sidecar._state import Sidecar, build_sidecar, peer_of
from middleware.sidecar._subjects_api import PATHS as SUBJECT_PATHS
from middleware.sidecar._subjects_api import routes as subject_routes
from middleware.sidecar._transport import Forwarder, upstream_transport

_log = logging.getLogger("guard.sidecar")

SETTINGS_ENV = "GUARD_SIDECAR_SETTINGS_JSON"
"""Settings handed to uvicorn worker processes (``guard sidecar --workers N``)."""

OWN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/v1/decide", *SUBJECT_PATHS})
"""Served by the sidecar itself, never forwarded (besides the check path)."""


class SidecarApp:
    """The ASGI app: check requests and proxied requests go straight to their pure
    ASGI endpoints (the hot paths); everything else, and the lifespan, to Starlette.

    Args:
        sidecar: The shared parts.
        starlette: The Starlette app with the other routes and the lifespan.
    """

    __slots__ = ("_check", "_console", "_prefix", "_proxy", "sidecar", "starlette")

    def __init__(self, sidecar: Sidecar, starlette: Starlette) -> None:
        self.sidecar = sidecar
        self.starlette = starlette
        self._prefix = sidecar.settings.sidecar.check_path.rstrip("/")
        self._check = CheckEndpoint(sidecar)
        self._proxy = ProxyEndpoint(sidecar) if sidecar.settings.sidecar.upstream else None
        console = sidecar.settings.console
        self._console = console.mount_path.rstrip("/") if console.mount_in_sidecar else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == self._prefix or path.startswith(self._prefix + "/"):
                await _fail_closed(self._check, scope, receive, send)
                return
            if self._proxy is not None and path not in OWN_PATHS and not (
                    self._console and (path + "/").startswith(self._console + "/")):
                await _fail_closed(self._proxy, scope, receive, send)
                return
        await self.starlette(scope, receive, send)


async def _fail_closed(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app``; an error before the answer started becomes a 500 problem+json denial."""
    started = False

    async def tracked(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, receive, tracked)
    except UpstreamAbortedError:
        raise  # logged and recorded; the server drops the connection
    except Exception as exc:
        # Never the path: it may name a person. The traceback without the message, too.
        _log.error(
            "the sidecar failed on a %s request: %s\n%s",
            scope["method"],
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
        )
        if started:
            raise
        await sidecar_problem(
            500, Reason.INTERNAL_ERROR.value, "The guard could not judge this request"
        )(scope, receive, send)


class ProxyEndpoint:
    """Catch-all ASGI app: enforce routes.csv, then forward to the upstream."""

    __slots__ = ("_outcomes", "_sidecar")

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar
        self._outcomes = sidecar.outcomes = PendingOutcomes(sidecar.guard)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        sidecar = self._sidecar
        purpose_header = sidecar.settings.identity.purpose_header
        headers = judged_headers(scope, purpose_header)
        if not framing_ok(scope["headers"]):  # a body the upstream could read another way
            refused = await refuse_target(sidecar, scope, headers, method=scope["method"],
                                          detail=AMBIGUOUS_FRAMING, what="framing")
            refused.headers["connection"] = "close"
            await _drain(receive, DRAINED)  # a close with unread bytes could reset the answer
            await refused(scope, receive, send)
            return
        raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query: bytes = scope.get("query_string", b"")
        path = judgeable_path(raw + ("?" + query.decode("latin-1") if query else ""))
        if path is None:
            refused = await refuse_target(
                sidecar, scope, headers, method=scope["method"], detail=AMBIGUOUS_TARGET
            )
            await refused(scope, receive, send)
            return
        # Earlier outcomes go to the trail while this request waits for its decision.
        self._outcomes.flush_soon()
        outcome = await enforce(
            sidecar.guard,
            sidecar.auth,
            sidecar.routes,
            method=scope["method"],
            path=path,
            headers=headers,
            peer=peer_of(scope),
            purpose_header=purpose_header,
            defer_reads=True,  # a read is recorded with its status, before its answer starts
        )
        denied = outcome.problem()
        if denied is not None:
            await denied(scope, receive, send)
            return
        held = Held(sidecar.guard, outcome)
        add: dict[str, str] = {}
        decision = outcome.decision
        if decision is not None:
            add[CALLER_HEADER] = decision.caller
            add[PURPOSE_HEADER] = decision.purpose
            # The purpose header reaches the upstream only as judged (client copies are dropped).
            add[purpose_header.lower()] = decision.purpose
        if held.decision_id:
            add[DECISION_HEADER] = held.decision_id
        proxy = sidecar.proxy
        assert proxy is not None  # set by the lifespan before any request
        route = outcome.route or "<undeclared>"
        read = held.pending
        out: Send = held.send(send) if read else send
        minimiser: Minimiser | None = None
        if outcome.fields is not None and outcome.released is not None:
            out = minimiser = Minimiser(
                out, scope, receive, outcome.fields, outcome.released,
                limit=DEFAULT_MAX_BODY, decision_id=held.decision_id,
                purpose=decision.purpose if decision is not None else None, route=route,
                opened=held.open if read else None)
        status, aborted = 502, False
        try:
            status = await proxy.forward(scope, receive, out, add=add,
                                         private=decision is not None)
            if minimiser is not None and minimiser.refused:
                status = 403
        except AuditUnavailableError:
            status = 403
            await _unrecorded(outcome, route)(scope, receive, send)
        except ClientGoneError as exc:  # nobody to answer; the upstream's answer is dropped
            status, aborted = exc.status, True
            _log.info("the client left during the answer to %s %s", scope["method"], route)
        except UpstreamAbortedError as exc:
            status, aborted = exc.status, True
            _log.warning("upstream aborted its answer to %s %s: %s", scope["method"], route, exc)
            raise
        except UpstreamError as exc:
            _log.warning("upstream failed for %s %s: %s", scope["method"], route, exc)
            try:
                await held.open(502)
            except AuditUnavailableError:
                status = 403
                await _unrecorded(outcome, route)(scope, receive, send)
            else:
                await sidecar_problem(
                    502,
                    "upstream_unavailable",
                    "The guarded service could not be reached",
                    decision_id=held.decision_id,
                )(scope, receive, send)
        finally:
            held.abandon(500)  # an error before any answer started: recorded, nothing left
            decision_id = held.decision_id
            # A read's status is in its decision; a write's, and a cut-short answer, follow it.
            if decision_id and (aborted or not read):
                http = http_context(scope["method"], route, status, aborted)  # shared
                # The outcome does not gate data flow: queued off this path (see PendingOutcomes).
                self._outcomes.add(decision_id, status, http)


DRAINED = 64 * 1024
"""The most bytes of a refused request's body read (and dropped) before it is answered."""


async def _drain(receive: Receive, limit: int) -> None:
    """Read and drop the request's body, up to ``limit`` bytes (the connection then closes)."""
    while limit > 0:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        limit -= len(message.get("body", b""))


def _unrecorded(outcome: Outcome, route: str) -> Response:
    """The 403 ``audit_unavailable`` that replaces an answer whose decision is not durable."""
    _log.error("a decision for %s could not be made durable: the answer is refused", route)
    decision = outcome.decision
    return problem_response(403, Reason.AUDIT_UNAVAILABLE,
                            decision.purpose if decision is not None else None,
                            decision.categories if decision is not None else (), None)


def _routes(sidecar: Sidecar) -> list[BaseRoute]:
    check = sidecar.settings.sidecar.check_path.rstrip("/")
    document = openapi_document(check, version=_package_version())
    body = json.dumps(document, separators=(",", ":")).encode()

    async def openapi(_: HttpRequest) -> Response:
        return Response(body, media_type="application/json")

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/decide", decide_endpoint, methods=["POST"]),
        *subject_routes(),  # the subject register API
    ]
    return routes


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("purpose-guard")
    except PackageNotFoundError:
        return "0"


def create_app(settings: Settings | None = None, *, sidecar: Sidecar | None = None,
               own_process: bool = False) -> SidecarApp:
    """Build the sidecar app; a bad setting or policy raises a GuardError here, not later.

    Args:
        settings: Settings to use; read from guard.toml and ``GUARD_*`` when None.
        sidecar: Already-built parts (tests pass their own).
        own_process: The app is its process's only one (``guard sidecar``, its workers):
            its start-up ends by freezing the heap when ``sidecar.gc_freeze`` is on.
    """
    if sidecar is None:
        sidecar = build_sidecar(settings if settings is not None else load_settings())
    built: Sidecar = sidecar

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        conf = built.settings.sidecar
        built.auth.announce()
        transport: Forwarder | None = None
        identity = built.settings.identity
        if conf.upstream:
            transport = upstream_transport(
                httpx.URL(conf.upstream).scheme, max_connections=conf.upstream_max_connections
            )
            built.proxy = Proxy(
                transport,
                conf.upstream,
                timeout_seconds=conf.upstream_timeout_seconds,
                strip=[identity.caller_header, identity.purpose_header],
            )
        tasks = await _start_watchers(built)
        name_threads()
        if own_process and conf.gc_freeze:
            _log.info("start-up heap frozen: %d objects the collector no longer walks",
                      freeze_startup_heap())
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if transport is not None:
                await transport.aclose()
            if built.outcomes is not None:
                built.outcomes.flush()
            await asyncio.to_thread(built.guard.close)

    routes = _routes(built)
    if built.settings.console.mount_in_sidecar:  # the auditor's console (docs/console.md)
        from middleware.console import create_console

        routes.append(Mount(built.settings.console.mount_path,
                            app=create_console(built.settings, guard=built.guard)))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sidecar = built
    return SidecarApp(built, app)


def name_threads() -> None:
    """Give the process's threads their Python names in the OS (``top -H``, ``/proc``)."""
    import ctypes
    import sys
    import threading

    if not sys.platform.startswith("linux"):  # elsewhere it names only the calling thread
        return
    try:
        setname = ctypes.CDLL(None).pthread_setname_np
    except (OSError, AttributeError):
        return
    for thread in threading.enumerate():
        if thread.ident is not None and thread is not threading.main_thread():
            setname(ctypes.c_ulong(thread.ident), thread.name.encode()[:15])


async def _start_watchers(sidecar: Sidecar) -> list[asyncio.Task[Any]]:
    settings = sidecar.settings
    if not settings.policy.watch:
        return []
    if sidecar.policy_dir is not None:
        watcher = sidecar.reloader.watch_files(
            sidecar.policy_dir, debounce_ms=settings.sidecar.reload_debounce_ms
        )
        return [asyncio.create_task(watcher, name="guard-policy-watcher")]
    listening = asyncio.Event()
    task = asyncio.create_task(
        sidecar.reloader.watch_store(settings.policy.source, listening),
        name="guard-policy-watcher",
    )
    try:
        await asyncio.wait_for(listening.wait(), timeout=5)
    except TimeoutError:
        _log.warning("not yet listening for policy pushes; the watcher keeps retrying")
    else:
        # A push between the start-up load and LISTEN would otherwise go unseen.
        await sidecar.reloader.reload("listening")
    return [task]


def configure_logging(level: str) -> None:
    """Show the sidecar's own log lines (reloads, upstream failures) beside uvicorn's."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)-9s %(name)s: %(message)s"))
    root = logging.getLogger("guard")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def app_from_env() -> ASGIApp:
    """uvicorn factory for worker processes: settings from ``$GUARD_SIDECAR_SETTINGS_JSON``."""
    raw = os.environ.get(SETTINGS_ENV)
    settings = Settings.model_validate_json(raw) if raw else load_settings()
    configure_logging(settings.sidecar.log_level)
    return create_app(settings, own_process=True)

