"""OpenID Connect sign-in (authorisation code flow with PKCE) for the console.

``/oidc/login`` sends the browser to the provider with a fresh ``state``, ``nonce``
and PKCE verifier (kept in a signed, short-lived cookie); ``/oidc/callback``
checks the ``state``, exchanges the code at the token endpoint, verifies the ID
token (signature by the provider's JWKS, ``iss``, ``aud``, ``exp``, ``nonce``)
and signs the auditor in with a console session if the configured claim names
one of ``console.auditors`` (``email`` only with ``email_verified`` true).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from guard._errors import ConfigError
from middleware.console._auth import SESSION_COOKIE, Sessions, secure_cookie
from middleware.console._pages import render
from middleware.console._quiet import Quiet

_log = logging.getLogger("guard.console")
_refused_log = Quiet(_log)
"""OIDC sign-ins refused: anyone can start one (each line written at most once a minute)."""
FLOW_COOKIE = "guard_console_oidc"
FLOW_SECONDS = 600
ALGORITHMS = ["RS256", "ES256", "EdDSA", "PS256"]


@dataclass(frozen=True, slots=True)
class Provider:
    """The provider's endpoints, from its discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


class OidcSignIn:
    """The OIDC sign-in of one console.

    Args:
        issuer: The provider's issuer URL (discovery at ``/.well-known/openid-configuration``).
        client_id: The console's client id at the provider (the ID token's ``aud``).
        client_secret: The client secret, or None for a public client (PKCE only).
        claim: The ID-token claim that names the auditor (``sub``, ``email``...).
        sessions: Signs the console session set after a successful sign-in.
    """

    def __init__(self, issuer: str, client_id: str, client_secret: str | None, claim: str,
                 sessions: Sessions) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self.claim = claim
        self._sessions = sessions
        self._provider: Provider | None = None
        self._jwks: jwt.PyJWKClient | None = None

    async def provider(self) -> Provider:
        """The discovery document, fetched once."""
        if self._provider is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            async with httpx.AsyncClient(timeout=10) as client:
                answer = await client.get(url)
            doc = answer.json() if answer.status_code == 200 else {}
            try:
                provider = Provider(str(doc["issuer"]), str(doc["authorization_endpoint"]),
                                    str(doc["token_endpoint"]), str(doc["jwks_uri"]))
            except KeyError as exc:
                raise ConfigError(f"OIDC discovery at {url} lacks {exc}") from None
            if provider.issuer.rstrip("/") != self.issuer:
                raise ConfigError(f"OIDC discovery at {url} names issuer {provider.issuer}")
            self._provider = provider
            self._jwks = jwt.PyJWKClient(provider.jwks_uri, cache_keys=True, timeout=10)
        return self._provider

    @staticmethod
    def redirect_uri(request: Request) -> str:
        """Where the provider sends the browser back: this console's callback, under
        ``console.public_url`` when set (behind a proxy that ends TLS the request's own
        URL is plain HTTP: the code would come back in the clear, the Secure flow cookie
        would not)."""
        public = request.app.state.console.settings.console.public_url
        if public:
            return f"{public.rstrip('/')}/oidc/callback"
        base = str(request.scope.get("root_path", "")).rstrip("/")
        return str(request.url.replace(path=f"{base}/oidc/callback", query=""))

    async def login(self, request: Request) -> Response:
        """Redirect to the provider with a new state, nonce and PKCE challenge."""
        provider = await self.provider()
        state, nonce, verifier = (secrets.token_urlsafe(24) for _ in range(3))
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode({
            "response_type": "code", "client_id": self.client_id, "scope": "openid email",
            "redirect_uri": self.redirect_uri(request), "state": state, "nonce": nonce,
            "code_challenge": challenge, "code_challenge_method": "S256"})
        response = RedirectResponse(f"{provider.authorization_endpoint}?{query}",
                                    status_code=303)
        flow = self._sessions.sign({"state": state, "nonce": nonce, "verifier": verifier},
                                   FLOW_SECONDS)
        response.set_cookie(FLOW_COOKIE, flow, max_age=FLOW_SECONDS, httponly=True,
                            samesite="lax", secure=secure_cookie(request),
                            path=_cookie_path(request))
        return response

    async def callback(self, request: Request) -> Response:
        """Check the provider's answer and sign the auditor in."""
        flow = self._sessions.open(request.cookies.get(FLOW_COOKIE, ""))
        state = request.query_params.get("state", "")
        code = request.query_params.get("code", "")
        if flow is None or not code or not secrets.compare_digest(str(flow.get("state")), state):
            return _refused(request, "The sign-in did not come back as it was sent: start again.",
                            400)
        try:
            claims = await self._id_token(request, code, str(flow["verifier"]))
        except (httpx.HTTPError, jwt.PyJWTError, KeyError, ValueError) as exc:
            _refused_log.log(logging.INFO, "console OIDC sign-in refused: %s", exc)
            return _refused(request, "The identity provider's answer did not verify.", 401)
        if not secrets.compare_digest(str(claims.get("nonce", "")), str(flow["nonce"])):
            return _refused(request, "The identity provider's answer did not verify.", 401)
        auditor = claims.get(self.claim)
        if self.claim == "email" and claims.get("email_verified") is not True:
            # an address on an account proves nothing until the provider verified it
            _refused_log.log(logging.INFO, "console OIDC sign-in refused: %s is not a verified "
                         "address", auditor)
            return _refused(request, "The identity provider has not verified your e-mail "
                            "address, so it cannot name an auditor.", 403)
        if not isinstance(auditor, str) or not self._sessions.is_auditor(auditor):
            _refused_log.log(logging.INFO, "console OIDC sign-in refused: %s is not an auditor",
                         auditor)
            return _refused(request, "You are signed in at the identity provider, but you are "
                            "not one of this console's auditors.", 403)
        _log.info("console sign-in (OIDC): %s", auditor)
        base = str(request.scope.get("root_path", "")).rstrip("/")
        response = RedirectResponse(f"{base}/signin/done", status_code=303)
        response.delete_cookie(FLOW_COOKIE, path=_cookie_path(request), httponly=True,
                               samesite="lax", secure=secure_cookie(request))
        response.set_cookie(SESSION_COOKIE, self._sessions.session(auditor), httponly=True,
                            samesite="lax", secure=secure_cookie(request),
                            path=_cookie_path(request))
        return response

    async def _id_token(self, request: Request, code: str, verifier: str) -> dict[str, Any]:
        provider = await self.provider()
        form = {"grant_type": "authorization_code", "code": code,
                "redirect_uri": self.redirect_uri(request), "client_id": self.client_id,
                "code_verifier": verifier}
        async with httpx.AsyncClient(timeout=10) as client:
            if self._secret:
                answer = await client.post(provider.token_endpoint, data=form,
                                           auth=httpx.BasicAuth(self.client_id, self._secret))
            else:
                answer = await client.post(provider.token_endpoint, data=form)
        answer.raise_for_status()
        token = str(answer.json()["id_token"])
        assert self._jwks is not None
        key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        claims: dict[str, Any] = jwt.decode(
            token, key.key, algorithms=ALGORITHMS, audience=self.client_id,
            issuer=provider.issuer, leeway=30,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        if claims.get("iat", 0) > time.time() + 60:
            raise ValueError("ID token issued in the future")
        return claims


def _cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/") + "/"


def _refused(request: Request, message: str, status: int) -> Response:
    return render(request, "error.html", {"auditor": None, "message": message},
                  status_code=status)

