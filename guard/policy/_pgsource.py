"""A shared policy source in PostgreSQL: push a linted policy, load the newest, watch for pushes.

Several sidecar replicas stay in step through one table and one notification
channel. ``guard policy push`` inserts a row (model text, rules text, version)
and sends ``NOTIFY guard_policy, '<version>'`` in the same transaction, so a
listener is only woken for a row it can read. Each replica LISTENs and reloads
when told; after a lost connection it reloads once anyway, since a push may
have happened while it was not listening. A replica starts on the newest stored
policy that loads (:func:`load_newest_good`), as a running one keeps it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from guard._errors import ConfigError, GuardError, PolicyError
from guard._pgurl import one_line, shown_url
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
_WATCHER_PARAMS: dict[str, str | int] = {
    "application_name": "guard-policy-watcher",
    # TCP keepalives: a link that dropped silently is noticed within about a minute.
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}
"""Connection parameters of the watcher (its ``application_name`` shows in pg_stat_activity)."""
REPEAT_LOG_SECONDS = 60.0
"""While the watcher cannot reconnect, it says so at most this often."""
MAX_POLICY_TEXT = 16 << 20
"""The most characters a stored policy's model or rules may hold (the shipped rules: about
20,000). A longer row is read only that far and refused, so a row written around ``guard
policy push`` cannot make every replica read and compile up to PostgreSQL's 1 GB."""


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
            f"cannot reach the policy store {shown_url(url)}: {one_line(exc)}"
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

    Raises:
        PolicyError: The model or the rules are longer than :data:`MAX_POLICY_TEXT`
            (no replica would load them).
    """
    if max(len(model_text), len(rules_text)) > MAX_POLICY_TEXT:
        raise PolicyError(f"the policy is longer than {MAX_POLICY_TEXT} characters; "
                          "no replica would load it", path=origin)
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
                f"cannot push the policy to {shown_url(url)}: {one_line(exc)}"
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
        row = _select_one(conn, url, "ORDER BY id DESC LIMIT 1", ())
    if row is None:
        raise _empty(url)
    return row


def _empty(url: str) -> ConfigError:
    return ConfigError(
        f"the policy store {shown_url(url)} holds no policy yet "
        "(push one with: guard policy push --store URL)"
    )


def _select_one(
    conn: psycopg.Connection[tuple[object, ...]], url: str, tail: str, params: tuple[object, ...]
) -> StoredPolicy | None:
    """The first stored policy ``SELECT ... FROM guard_policy <tail>`` finds, if any."""
    try:
        row = conn.execute(
            sql.SQL(
                "SELECT id, version, left(model_text, {n}), left(rules_text, {n}), origin, "
                "pushed_at FROM {} "
            ).format(sql.Identifier(TABLE), n=sql.Literal(MAX_POLICY_TEXT + 1)) + sql.SQL(tail),
            params,
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot read the policy store {shown_url(url)}: {one_line(exc)}"
        ) from exc
    if row is None:
        return None
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
    return _compile(url, load_latest(url))


def _compile(url: str, stored: StoredPolicy) -> CompiledPolicy:
    """Compile a stored policy; it must compile to the version it was pushed with."""
    if max(len(stored.model_text), len(stored.rules_text)) > MAX_POLICY_TEXT:
        raise PolicyError(f"pushed policy #{stored.id} is longer than {MAX_POLICY_TEXT} "
                          "characters", hint="push a policy of a sensible size")
    policy = compile_policy(stored.model_text, stored.rules_text, f"{shown_url(url)}#{stored.id}")
    if policy.version != stored.version:
        raise PolicyError(
            f"pushed policy #{stored.id} compiles to {policy.version}, not {stored.version}",
            hint="push it again with this version of the guard",
        )
    return policy


@dataclass(frozen=True, slots=True)
class SkippedPolicy:
    """A stored policy newer than the one started on, and why it did not load.

    Args:
        id: Its row id.
        version: The version it was pushed with.
        error: Why it does not load.
    """

    id: int
    version: str
    error: str


@dataclass(frozen=True, slots=True)
class StartPolicy:
    """The policy a replica starts on, and the newer stored ones it had to skip.

    Args:
        policy: The newest stored policy that loads.
        id: Its row id.
        skipped: The newer rows that do not load, newest first.
    """

    policy: CompiledPolicy
    id: int
    skipped: tuple[SkippedPolicy, ...]


def load_newest_good(url: str) -> StartPolicy:
    """The newest stored policy that loads, walking back past the ones that do not.

    A row written around ``guard policy push``, or a lint rule that changed since a
    policy was pushed, must not keep a replica from starting: it starts on the
    newest good policy, as a running replica keeps it, and says which it skipped.

    Raises:
        ConfigError: The store cannot be reached, is empty, or no stored policy loads.
    """
    skipped: list[SkippedPolicy] = []
    with _connect(url, autocommit=True) as conn:
        stored = _select_one(conn, url, "ORDER BY id DESC LIMIT 1", ())
        if stored is None:
            raise _empty(url)
        while stored is not None:
            try:
                policy = _compile(url, stored)
            except GuardError as exc:
                skipped.append(SkippedPolicy(stored.id, stored.version, str(exc)))
                stored = _select_one(conn, url, "WHERE id < %s ORDER BY id DESC LIMIT 1",
                                     (stored.id,))
                continue
            return StartPolicy(policy, stored.id, tuple(skipped))
    newest = skipped[0]
    raise ConfigError(
        f"no policy stored in {shown_url(url)} loads ({len(skipped)} tried); the newest, "
        f"#{newest.id}: {newest.error}"
    )


async def watch_store(
    url: str,
    on_push: Callable[[str], Awaitable[None]],
    *,
    ready: asyncio.Event | None = None,
    listening: Callable[[bool, str | None], None] | None = None,
    retry_seconds: float = 1.0,
) -> None:
    """LISTEN for pushes and await ``on_push(version)`` for each; runs until cancelled.

    A lost connection is logged once, with its cause; while reconnecting fails,
    a line at most every minute; the reconnection once.

    Args:
        url: PostgreSQL connection URL.
        on_push: Called with the pushed version (or ``""`` after a reconnect,
            when pushes may have been missed).
        ready: Set once the first LISTEN is in place.
        listening: Told ``(True, None)`` when a LISTEN is in place, ``(False, cause)``
            when the connection is lost or cannot be made.
        retry_seconds: Pause before reconnecting after a lost connection.
    """
    first = True
    lost_at: float | None = None  # time.monotonic() of the loss, while disconnected
    attempts = 0
    logged_at = 0.0
    while True:
        try:
            aconn = await psycopg.AsyncConnection.connect(
                psycopg.conninfo.make_conninfo(url, **_WATCHER_PARAMS),
                autocommit=True, connect_timeout=5)
            async with aconn:
                await aconn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                if lost_at is not None:
                    _log.warning(
                        "policy store watcher reconnected to %s after %.1f s (%d attempt(s)); "
                        "reloading once", shown_url(url), time.monotonic() - lost_at, attempts)
                lost_at, attempts = None, 0
                if listening is not None:
                    listening(True, None)
                if ready is not None:
                    ready.set()
                if not first:
                    await on_push("")
                first = False
                async for note in aconn.notifies():
                    await on_push(note.payload)
            cause = "the connection closed"
        except psycopg.Error as exc:
            cause = one_line(exc)
        first = False
        attempts += 1
        now = time.monotonic()
        if listening is not None:
            listening(False, cause)
        if lost_at is None:
            lost_at = logged_at = now
            _log.warning("policy store watcher lost %s: %s; not hearing pushes, retrying "
                         "every %g s", shown_url(url), cause, retry_seconds)
        elif now - logged_at >= REPEAT_LOG_SECONDS:
            logged_at = now
            _log.warning("policy store watcher still cannot reach %s after %.0f s "
                         "(%d attempt(s)): %s", shown_url(url), now - lost_at, attempts, cause)
        await asyncio.sleep(retry_seconds)
