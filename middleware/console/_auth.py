"""Who may use the console: auditors proven by a signed service token.

The auditor pastes a token on the sign-in page (``guard token issue`` in a
development setup, or one from the organisation's token issuer); the console
verifies it with :class:`middleware.identity.Authenticator` (signature, ``aud``,
``iss``, ``exp``), checks that its ``sub`` is one of ``console.auditors`` and
keeps it in an HttpOnly, SameSite=Strict cookie, verified again on every request.
Scripts may send it as ``Authorization: Bearer`` instead.
"""

from __future__ import annotations

from starlette.requests import Request

from middleware.identity import Authenticator, IdentityError

COOKIE = "guard_console"


class NotAnAuditorError(IdentityError):
    """A valid token whose caller is not one of the configured auditors."""


class Gate:
    """Checks tokens and the auditors list.

    Args:
        auth: Verifies tokens.
        auditors: Caller ids that may use the console.
    """

    __slots__ = ("_auditors", "_auth")

    def __init__(self, auth: Authenticator, auditors: list[str]) -> None:
        self._auth = auth
        self._auditors = frozenset(auditors)

    def auditor(self, token: str) -> str:
        """The auditor a token proves.

        Raises:
            IdentityError: the token does not verify, or its caller is not an auditor.
        """
        caller = self._auth.verify(token.strip())
        if caller.id not in self._auditors:
            raise NotAnAuditorError(f"{caller.id} is not one of the console's auditors")
        return caller.id

    def request_auditor(self, request: Request) -> str | None:
        """The auditor signed in on this request (bearer header or cookie), or None."""
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
