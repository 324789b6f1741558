"""A shared policy source in PostgreSQL: push a linted policy, load the newest, watch for pushes.

Several sidecar replicas stay in step through one table and one notification
channel. ``guard policy push`` inserts a row (model text, rules text, version)
and sends ``NOTIFY guard_policy, '<version>'`` in the same transaction, so a
listener is only woken for a row it can read. Each replica LISTENs and reloads
when told; after a lost connection it reloads once anyway, since a push may
have happened while it was not listening.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from guard._errors import ConfigError, PolicyError
from guard.policy._compiled import CompiledPolicy
from guard.policy._load import compile_policy, compile_source
from guard.policy._source import read_source, resolve_policy_dir

CHANNEL = "guard_policy"
TABLE = "guard_policy"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id         bigserial PRIMARY KEY,
    version    text NOT NULL,
    model_text text NOT NULL,
    rules_text text NOT NULL,
    origin     text NOT NULL,
    pushed_at  timestamptz NOT NULL DEFAULT now()
)
"""

_log = logging.getLogger("guard.policy.pgsource")


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """One pushed policy as stored in PostgreSQL.

    Args:
        id: Row id; the highest id is the current policy.
        version: The policy version digest computed when it was pushed.
        model_text: The casbin model (model.conf).
        rules_text: The casbin rules (rules.csv).
        origin: Where it was pushed from (a folder, a commit...).
        pushed_at: When it was pushed.
    """

    id: int
    version: str
    model_text: str
    rules_text: str
    origin: str
    pushed_at: datetime


def is_postgres_url(source: str) -> bool:
    """Whether a policy source setting names a PostgreSQL database."""
    return source.startswith(("postgresql://", "postgres://"))


def _connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, connect_timeout=5, autocommit=autocommit)
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot reach the policy store {_redact(url)}: {_first_line(exc)}"
        ) from exc


def push_policy(
    url: str, *, model_text: str, rules_text: str, version: str, origin: str
) -> StoredPolicy:
    """Store a policy (already linted by the caller) and notify every listening replica.

    Args:
        url: PostgreSQL connection URL.
        model_text: The casbin model text.
        rules_text: The casbin rules text.
        version: The version digest of model and rules.
        origin: Where the policy came from, for the record.
    """
    with _connect(url) as conn:
        try:
            conn.execute(_SCHEMA)
            cur = conn.execute(
                sql.SQL(
                    "INSERT INTO {} (version, model_text, rules_text, origin) "
                    "VALUES (%s, %s, %s, %s) RETURNING id, pushed_at"
                ).format(sql.Identifier(TABLE)),
                (version, model_text, rules_text, origin),
            )
            row = cur.fetchone()
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, version))
            conn.commit()
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot push the policy to {_redact(url)}: {_first_line(exc)}"
            ) from exc
    assert row is not None
    row_id, pushed_at = row
    assert isinstance(row_id, int)
    assert isinstance(pushed_at, datetime)
    return StoredPolicy(row_id, version, model_text, rules_text, origin, pushed_at)


def load_latest(url: str) -> StoredPolicy:
    """The most recently pushed policy.

    Raises:
        ConfigError: The store cannot be reached or holds no policy yet.
    """
    with _connect(url, autocommit=True) as conn:
        try:
            row = conn.execute(
                sql.SQL(
                    "SELECT id, version, model_text, rules_text, origin, pushed_at "
                    "FROM {} ORDER BY id DESC LIMIT 1"
                ).format(sql.Identifier(TABLE))
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            row = None
        except psycopg.Error as exc:
            raise ConfigError(
                f"cannot read the policy store {_redact(url)}: {_first_line(exc)}"
            ) from exc
    if row is None:
        raise ConfigError(
            f"the policy store {_redact(url)} holds no policy yet "
            "(push one with: guard policy push --store URL)"
        )
    row_id, version, model_text, rules_text, origin, pushed_at = row
    return StoredPolicy(
        int(str(row_id)),
        str(version),
        str(model_text),
        str(rules_text),
        str(origin),
        pushed_at if isinstance(pushed_at, datetime) else datetime.fromisoformat(str(pushed_at)),
    )


def push_policy_dir(url: str, policy_dir: Path | None = None) -> StoredPolicy:
    """Lint and compile a policy folder, then push it; a policy with errors is never pushed.

    Raises:
        PolicyLoadError: The policy has lint errors.
        ConfigError: The store cannot be reached.
    """
    folder = resolve_policy_dir(policy_dir)
    source = read_source(folder)
    compiled = compile_source(source)
    return push_policy(
        url,
        model_text=source.model_text,
        rules_text=source.rules_text,
        version=compiled.version,
        origin=str(folder.resolve()),
    )


def load_store_policy(url: str) -> CompiledPolicy:
    """Compile the newest pushed policy (a loader for :class:`PolicyHolder`).

    Raises:
        ConfigError: The store cannot be reached or is empty.
        PolicyError: The stored texts no longer compile to the version pushed.
    """
    stored = load_latest(url)
    policy = compile_policy(stored.model_text, stored.rules_text, f"{_redact(url)}#{stored.id}")
    if policy.version != stored.version:
        raise PolicyError(
            f"pushed policy #{stored.id} compiles to {policy.version}, not {stored.version}",
            hint="push it again with this version of the guard",
        )
    return policy


async def watch_store(
    url: str,
    on_push: Callable[[str], Awaitable[None]],
    *,
    ready: asyncio.Event | None = None,
    listening: Callable[[bool], None] | None = None,
    retry_seconds: float = 1.0,
) -> None:
    """LISTEN for pushes and await ``on_push(version)`` for each; runs until cancelled.

    Args:
        url: PostgreSQL connection URL.
        on_push: Called with the pushed version (or ``""`` after a reconnect,
            when pushes may have been missed).
        ready: Set once the first LISTEN is in place.
        listening: Told True when a LISTEN is in place, False when the connection is lost.
        retry_seconds: Pause before reconnecting after a lost connection.
    """
    first = True
    while True:
        try:
            aconn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
            async with aconn:
                await aconn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                if listening is not None:
                    listening(True)
                if ready is not None:
                    ready.set()
                if not first:
                    await on_push("")
                first = False
                async for note in aconn.notifies():
                    await on_push(note.payload)
        except psycopg.Error as exc:
            _log.warning(
                "policy store watcher lost %s: %s; retrying", _redact(url), _first_line(exc)
            )
            first = False
            await asyncio.sleep(retry_seconds)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _redact(url: str) -> str:
    """The URL without its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "<invalid URL>"
    host = info.get("host", "localhost")
    port = info.get("port", "5432")
    db = info.get("dbname", "")
    return f"postgresql://{host}:{port}/{db}"
