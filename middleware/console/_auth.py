"""Who may use the console: auditors proven by a signed service token or by OIDC.

The auditor pastes a token on the sign-in page (``guard token issue`` in a
development setup, or one from the organisation's token issuer); the console
verifies it with :class:`middleware.identity.Authenticator` (signature, ``aud``,
``iss``, ``exp``), checks that its ``sub`` is one of ``console.auditors`` and
keeps it in an HttpOnly, SameSite=Strict cookie, verified again on every request.
Scripts may send it as ``Authorization: Bearer`` instead. An OIDC sign-in
(``_oidc.py``) ends in a console session instead: a cookie holding the auditor
and an expiry, signed with a key made when the console starts (so a restart
signs everyone out).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from starlette.requests import Request

from middleware.identity import Authenticator, IdentityError

COOKIE = "guard_console"
SESSION_COOKIE = "guard_console_session"


class NotAnAuditorError(IdentityError):
    """A valid token whose caller is not one of the configured auditors."""


class Sessions:
    """Signed, expiring values for cookies (HMAC-SHA256 with a per-process key).

    Args:
        auditors: Who may hold a session.
        minutes: How long a session lasts.
    """

    __slots__ = ("_auditors", "_key", "_seconds")

    def __init__(self, auditors: list[str], minutes: int) -> None:
        self._key = secrets.token_bytes(32)
        self._auditors = frozenset(auditors)
        self._seconds = minutes * 60

    def is_auditor(self, caller: str) -> bool:
        """True if ``caller`` is one of the console's auditors."""
        return caller in self._auditors

    def sign(self, value: dict[str, Any], seconds: int) -> str:
        """``value`` with an expiry, as ``payload.signature`` (URL-safe)."""
        body = json.dumps({**value, "exp": int(time.time()) + seconds}, separators=(",", ":"))
        payload = base64.urlsafe_b64encode(body.encode()).decode()
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{mac}"

    def open(self, signed: str) -> dict[str, Any] | None:
        """The value of an unexpired ``signed`` made by :meth:`sign`, or None."""
        payload, _, mac = signed.partition(".")
        good = hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()
        if not mac or not hmac.compare_digest(mac, good):
            return None
        try:
            value = json.loads(base64.urlsafe_b64decode(payload.encode()))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(value, dict) or not isinstance(value.get("exp"), int):
            return None
        return value if value["exp"] > time.time() else None

    def session(self, auditor: str) -> str:
        """A signed session for ``auditor``."""
        return self.sign({"auditor": auditor}, self._seconds)

    def auditor(self, signed: str) -> str | None:
        """The auditor of a valid session cookie, if still an auditor."""
        value = self.open(signed)
        who = value.get("auditor") if value else None
        return who if isinstance(who, str) and who in self._auditors else None


class Gate:
    """Checks tokens, sessions and the auditors list.

    Args:
        auth: Verifies tokens.
        auditors: Caller ids that may use the console.
        sessions: Verifies OIDC sessions.
        purpose: The purpose the console's work is declared under (``console.purpose``):
            a token whose ``purposes`` claim leaves it out proves no auditor here.
    """

    __slots__ = ("_auditors", "_auth", "_purpose", "sessions")

    def __init__(self, auth: Authenticator, auditors: list[str], sessions: Sessions,
                 purpose: str) -> None:
        self._auth = auth
        self._auditors = frozenset(auditors)
        self._purpose = purpose
        self.sessions = sessions

    def auditor(self, token: str) -> str:
        """The auditor a token proves.

        Raises:
            IdentityError: the token does not verify, its caller is not an auditor, or its
                ``purposes`` claim leaves out the console's purpose.
        """
        caller = self._auth.verify(token.strip())
        if caller.id not in self._auditors:
            raise NotAnAuditorError(f"{caller.id} is not one of the console's auditors")
        if not caller.may_declare(self._purpose):
            raise NotAnAuditorError(f"the token's purposes claim leaves out {self._purpose}")
        return caller.id

    def request_auditor(self, request: Request) -> str | None:
        """The auditor signed in on this request (bearer header, token cookie or OIDC
        session), or None."""
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            who = self.sessions.auditor(session)
            if who is not None:
                return who
        header = request.headers.get("authorization", "")
        scheme, _, bearer = header.partition(" ")
        token = bearer if scheme.lower() == "bearer" and bearer.strip() else None
        token = token or request.cookies.get(COOKIE)
        if not token:
            return None
        try:
            return self.auditor(token)
        except IdentityError:
            return None


def secure_cookie(request: Request) -> bool:
    """Whether a cookie set in answer to ``request`` is ``Secure``.

    Always, unless ``console.secure_cookies`` is false: a proxy that ends TLS in front
    of the console hands it plain HTTP, so the request's own scheme cannot tell.
    """
    return bool(request.app.state.console.settings.console.secure_cookies
                or request.url.scheme == "https")
