"""OIDC sign-in to the console against a small OpenID provider on loopback."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode

import httpx
import jwt
import pytest
from consolekit import CHROMIUM, CHROMIUM_ARGS, UvicornThread, console_settings, need_chromium
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from middleware.console import create_console

CLIENT = "console-test"
AUDITOR_EMAIL = "alice@example.org"


@dataclass
class Provider:
    """An OpenID provider that signs in whoever ``user`` names, with a few ways to misbehave."""

    url: str = ""
    user: str = AUDITOR_EMAIL
    wrong_nonce: bool = False
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    codes: dict[str, dict[str, str]] = field(default_factory=dict)

    def app(self) -> Starlette:
        async def discovery(_: Request) -> Response:
            return JSONResponse({"issuer": self.url, "authorization_endpoint": f"{self.url}/auth",
                                 "token_endpoint": f"{self.url}/token",
                                 "jwks_uri": f"{self.url}/jwks"})

        async def authorize(request: Request) -> Response:
            q = request.query_params
            assert q["client_id"] == CLIENT
            assert q["code_challenge_method"] == "S256"
            code = secrets.token_urlsafe(8)
            self.codes[code] = {"nonce": q["nonce"], "challenge": q["code_challenge"],
                                "redirect_uri": q["redirect_uri"]}
            return RedirectResponse(
                f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q['state']})}", 303)

        async def token(request: Request) -> Response:
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            grant = self.codes.pop(str(form["code"]), None)
            verifier = str(form.get("code_verifier", ""))
            challenge = base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if (grant is None or challenge != grant["challenge"]
                    or form["redirect_uri"] != grant["redirect_uri"]):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            now = int(time.time())
            claims = {"iss": self.url, "aud": CLIENT, "sub": f"user-{self.user}",
                      "email": self.user, "iat": now, "exp": now + 300,
                      "nonce": "other" if self.wrong_nonce else grant["nonce"]}
            verified = getattr(self, "verified", True)  # a subclass may say otherwise
            if verified is not None:
                claims["email_verified"] = verified
            return JSONResponse({"id_token": jwt.encode(claims, self.key, algorithm="RS256",
                                                        headers={"kid": "k1"}),
                                 "token_type": "Bearer"})

        async def jwks(_: Request) -> Response:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
            return JSONResponse({"keys": [{**jwk, "kid": "k1", "alg": "RS256", "use": "sig"}]})

        return Starlette(routes=[Route("/.well-known/openid-configuration", discovery),
                                 Route("/auth", authorize), Route("/token", token,
                                                                   methods=["POST"]),
                                 Route("/jwks", jwks)])


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Provider, str]]:
    provider = Provider()
    with UvicornThread(provider.app()) as idp:
        provider.url = idp.url
        settings = console_settings(tmp_path_factory.mktemp("oidc"), oidc_issuer=idp.url,
                                    oidc_client_id=CLIENT, oidc_auditor_claim="email",
                                    auditors=[AUDITOR_EMAIL])
        with UvicornThread(create_console(settings)) as console:
            yield provider, console.url


def sign_in(url: str) -> httpx.Response:
    with httpx.Client(follow_redirects=True) as client:
        return client.get(f"{url}/oidc/login")


def test_an_auditor_signs_in_at_the_provider(oidc: tuple[Provider, str]) -> None:
    _, url = oidc
    answer = sign_in(url)
    assert answer.status_code == 200
    assert answer.url.path == "/decisions"
    assert f'id="auditor">{AUDITOR_EMAIL}<' in answer.text


def test_a_provider_user_who_is_no_auditor_is_refused(oidc: tuple[Provider, str]) -> None:
    provider, url = oidc
    provider.user = "bob@example.org"
    try:
        answer = sign_in(url)
    finally:
        provider.user = AUDITOR_EMAIL
    assert answer.status_code == 403
    assert "not one of this console&#39;s auditors" in answer.text


def test_a_replayed_or_forged_answer_is_refused(oidc: tuple[Provider, str]) -> None:
    provider, url = oidc
    with httpx.Client() as client:
        started = client.get(f"{url}/oidc/login")
        authorize = httpx.get(started.headers["location"])
        back = httpx.URL(authorize.headers["location"])
        forged = back.copy_set_param("state", "forged")
        assert client.get(str(forged)).status_code == 400  # state does not match the cookie
        assert client.get(f"{url}/decisions").status_code == 303  # not signed in
    provider.wrong_nonce = True
    try:
        answer = sign_in(url)
    finally:
        provider.wrong_nonce = False
    assert answer.status_code == 401


@pytest.mark.chromium
def test_single_sign_on_in_the_browser(oidc: tuple[Provider, str]) -> None:
    need_chromium()
    from playwright.sync_api import sync_playwright

    _, url = oidc
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{url}/decisions")
            page.click("#oidc-signin")
            page.wait_for_url("**/decisions")
            assert page.inner_text("#auditor") == AUDITOR_EMAIL
            page.click("text=Sign out")
            page.wait_for_url("**/signin")
            page.goto(f"{url}/decisions")
            assert page.url.endswith("/signin")
        finally:
            browser.close()

