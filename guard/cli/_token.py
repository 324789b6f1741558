"""``guard token issue``: development service tokens signed with the local key."""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated

import typer

from guard._errors import ConfigError
from guard.config import IdentitySettings, load_settings

token_app = typer.Typer(help="Mint development service tokens.", no_args_is_help=True)

_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_TTL = 30 * 86400


def parse_ttl(text: str) -> int:
    """``30s``, ``15m``, ``1h``, ``7d`` or plain seconds -> seconds; raises ConfigError."""
    found = _TTL.match(text)
    if found is None:
        raise ConfigError(f"--ttl {text!r} is not a duration; use e.g. 30s, 15m, 1h or 7d")
    seconds = int(found.group(1)) * _UNIT[found.group(2)]
    if not 0 < seconds <= _MAX_TTL:
        raise ConfigError(f"--ttl {text!r} must be between 1s and 30d")
    return seconds


def issue_token(
    identity: IdentitySettings,
    caller: str,
    purposes: list[str] | None = None,
    ttl_seconds: int = 3600,
    *,
    now: float | None = None,
) -> str:
    """A signed development token (EdDSA, the local key) for ``caller``.

    Args:
        identity: Where the development key lives, and the audience and issuer.
        caller: The ``sub`` claim, e.g. ``svc:crm``.
        purposes: The ``purposes`` claim; None leaves it out (no limit).
        ttl_seconds: Lifetime of the token.
        now: Issue time (seconds since the epoch); defaults to now.

    Raises:
        ConfigError: an empty caller, or development mode is off (the token
            would be refused).
    """
    import jwt

    from middleware.identity import dev_key_id, development_mode, load_or_create_dev_key

    if not caller.strip():
        raise ConfigError("--caller must name a caller, e.g. svc:crm")
    if not development_mode(identity):
        raise ConfigError(
            "development tokens are refused outside development mode (an identity provider "
            "is configured); get a token from it, or set identity.development = true"
        )
    key = load_or_create_dev_key(identity.dev_key)
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": caller,
        "aud": identity.audience,
        "iss": identity.issuer,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
        "jti": uuid.uuid4().hex,
    }
    if purposes:
        claims["purposes"] = sorted(set(purposes))
    return jwt.encode(claims, key, algorithm="EdDSA",
                      headers={"kid": dev_key_id(key.public_key())})


@token_app.command("issue")
def issue(
    caller: Annotated[str, typer.Option("--caller", help="Caller id (the token's sub).")],
    purpose: Annotated[
        list[str] | None,
        typer.Option("--purpose", help="A purpose the caller may declare (repeatable)."),
    ] = None,
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 30s, 15m, 1h, 7d.")] = "1h",
) -> None:
    """Print a development token signed with the local key (created on first use)."""
    seconds = parse_ttl(ttl)
    settings = load_settings()
    typer.echo(issue_token(settings.identity, caller, purpose or None, seconds))


def register(app: typer.Typer) -> None:
    """Add ``guard token`` to the ``guard`` app."""
    app.add_typer(token_app, name="token")
