"""The console as a Starlette app: routes, sign-in, security headers, lifespan."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from guard import Guard
from guard._errors import ConfigError, GuardError
from guard._secrets import read_key_file
from guard.audit import load_hmac_key
from guard.config import Settings, load_settings
from middleware._bounds import read_limited
from middleware.console import _views
from middleware.console._auth import COOKIE, SESSION_COOKIE, Gate, Sessions, secure_cookie
from middleware.console._oidc import OidcSignIn
from middleware.console._pages import render
from middleware.console._quiet import Quiet
from middleware.console._state import Console
from middleware.identity import Authenticator, IdentityError

_log = logging.getLogger("guard.console")
_refused_signin = Quiet(_log)
_cookie_not_kept = Quiet(_log)
_STATIC = Path(__file__).with_name("static")
_MAX_FORM = 16 * 1024

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

Handler = Callable[[Request, Console, str], Awaitable[Response]]


class SecurityHeaders:
    """Adds CSP, no-sniff, no-referrer and no-store to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def base_path(request: Request) -> str:
    """Where the console is mounted (``""`` at the root, ``/console`` in the sidecar)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


async def form(request: Request) -> dict[str, str] | None:
    """A small URL-encoded form body (first value of each field); None past :data:`_MAX_FORM`.

    A declared length over the bound is refused unread, and any other body is dropped the
    moment it passes it: the sign-in form is open to everyone, so a client with no
    credentials must not make the console (or the sidecar mounting it) hold its body.
    """
    body = await read_limited(request, _MAX_FORM)
    if body is None:
        return None
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}


def form_too_large() -> Response:
    """413 for a form past :data:`_MAX_FORM`; the connection is closed, not drained."""
    return Response("The form is too large.", status_code=413, media_type="text/plain",
                    headers={"connection": "close"})


def _protected(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        console: Console = request.app.state.console
        auditor = console.gate.request_auditor(request)
        if auditor is None:
            if request.headers.get("accept", "").startswith("text/event-stream"):
                return Response("sign in first", status_code=401)
            return RedirectResponse(f"{base_path(request)}/signin", status_code=303)
        try:
            return await handler(request, console, auditor)
        except GuardError as exc:
            return render(request, "error.html", {"auditor": auditor, "message": str(exc)},
                          status_code=400)
    return endpoint


async def signin_page(request: Request) -> Response:
    """The sign-in form (and the single sign-on button when OIDC is configured)."""
    console: Console = request.app.state.console
    return render(request, "signin.html", {"auditor": None, "error": None,
                                           "oidc": console.oidc is not None})


async def oidc_login(request: Request) -> Response:
    """Start an OIDC sign-in."""
    console: Console = request.app.state.console
    if console.oidc is None:
        return Response("OIDC sign-in is not configured", status_code=404)
    return await console.oidc.login(request)


async def oidc_callback(request: Request) -> Response:
    """Finish an OIDC sign-in."""
    console: Console = request.app.state.console
    if console.oidc is None:
        return Response("OIDC sign-in is not configured", status_code=404)
    return await console.oidc.callback(request)


async def signin(request: Request) -> Response:
    """Verify the pasted token; on success keep it in an HttpOnly cookie."""
    console: Console = request.app.state.console
    fields = await form(request)
    if fields is None:
        return form_too_large()
    token = fields.get("token", "").strip()
    try:
        auditor = console.gate.auditor(token) if token else None
    except IdentityError as exc:
        _refused_signin.log(logging.INFO, "console sign-in refused: %s", exc)
        auditor = None
    if auditor is None:
        return render(request, "signin.html",
                      {"auditor": None, "oidc": console.oidc is not None,
                       "error": "That token is not valid for an auditor of this console."},
                      status_code=401)
    _log.info("console sign-in: %s", auditor)
    response = RedirectResponse(f"{base_path(request)}/signin/done", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookie(request), path=f"{base_path(request)}/")
    return response


COOKIE_NOT_KEPT = (
    "Your browser did not keep the sign-in cookie. The console marks it Secure "
    "(console.secure_cookies), and browsers keep Secure cookies only over HTTPS or on "
    "localhost: open the console over HTTPS (or through a proxy that ends TLS), or, on a "
    "trusted network only, set console.secure_cookies = false.")


async def signed_in(request: Request) -> Response:
    """Where a sign-in lands: the decisions, or why the browser came back without its cookie."""
    console: Console = request.app.state.console
    if console.gate.request_auditor(request) is not None:
        return RedirectResponse(f"{base_path(request)}/decisions", status_code=303)
    _cookie_not_kept.log(logging.WARNING, "console sign-in: the browser came back without "
                         "its cookie (a Secure cookie over plain HTTP?)")
    return render(request, "signin.html", {"auditor": None, "oidc": console.oidc is not None,
                                           "error": COOKIE_NOT_KEPT}, status_code=400)


async def signout(request: Request) -> Response:
    """Forget the cookies, deleted with the attributes they were set with (``Secure``)."""
    response = RedirectResponse(f"{base_path(request)}/signin", status_code=303)
    secure = secure_cookie(request)
    response.delete_cookie(COOKIE, path=f"{base_path(request)}/", secure=secure,
                           httponly=True, samesite="strict")
    response.delete_cookie(SESSION_COOKIE, path=f"{base_path(request)}/", secure=secure,
                           httponly=True, samesite="lax")
    return response


async def home(request: Request) -> Response:
    """The decisions table is the start page."""
    return RedirectResponse(f"{base_path(request)}/decisions", status_code=303)


def _routes() -> list[BaseRoute]:
    p = _protected
    return [
        Route("/", home),
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signin/done", signed_in, methods=["GET"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/oidc/login", oidc_login),
        Route("/oidc/callback", oidc_callback),
        Route("/decisions", p(_views.decisions)),
        Route("/decisions/tail", p(_views.tail)),
        Route("/events/{event_id}", p(_views.event)),
        Route("/subject", p(_views.subject_form), methods=["GET"]),
        Route("/subject", p(_views.subject_lookup), methods=["POST"]),
        Route("/subject/{pseudonym}", p(_views.subject_page)),
        Route("/subject/{pseudonym}/report.{fmt}", p(_views.subject_export)),
        Route("/overview", p(_views.overview)),
        Route("/overview/data.json", p(_views.overview_data)),
        Route("/integrity", p(_views.integrity), methods=["GET"]),
        Route("/integrity", p(_views.integrity_check), methods=["POST"]),
        Route("/policies", p(_views.policies)),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]


def build_console(settings: Settings, guard: Guard | None = None) -> Console:
    """The console's shared parts; a bad setting raises a GuardError here."""
    conf = settings.console
    sessions = Sessions(conf.auditors, conf.session_minutes)
    gate = Gate(Authenticator.from_settings(settings.identity), conf.auditors, sessions,
                conf.purpose)
    hmac_key = load_hmac_key(settings.audit.hmac_key, create=True)
    oidc = None
    if conf.oidc_issuer:
        secret = None
        if conf.oidc_client_secret_file is not None:
            try:  # a small regular file no other local user may rewrite, as every key
                secret = read_key_file(conf.oidc_client_secret_file, private=True).decode(
                    "utf-8", "replace").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read console.oidc_client_secret_file "
                                  f"{conf.oidc_client_secret_file}: {exc.strerror}") from exc
        oidc = OidcSignIn(conf.oidc_issuer, conf.oidc_client_id, secret,
                          conf.oidc_auditor_claim, sessions)
    return Console(settings, guard, gate, hmac_key, owns_guard=guard is None, oidc=oidc)


def create_console(settings: Settings | None = None, *, guard: Guard | None = None) -> Starlette:
    """Build the console app.

    Args:
        settings: Settings to use; read from guard.toml and ``GUARD_*`` when None.
        guard: A running guard to record look-ups with (the sidecar passes its own);
            when None the console opens one at start-up and closes it at shutdown.
            A mounted console gets no lifespan, so its host must pass ``guard``.
    """
    console = build_console(settings if settings is not None else load_settings(), guard)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if console.guard is None:
            console.guard = await run_in_threadpool(Guard.from_settings, console.settings)
        try:
            yield
        finally:
            await run_in_threadpool(console.close)

    app = Starlette(routes=_routes(), middleware=[Middleware(SecurityHeaders)],
                    lifespan=lifespan)
    app.state.console = console
    return app


def console_state(app: Any) -> Console:
    """The :class:`Console` of an app made by :func:`create_console` (for tests and hosts)."""
    state: Console = app.state.console
    return state
