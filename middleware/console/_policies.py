"""Policy history from the trail, and the access diff between two versions.

The trail records each policy's version (``policy_loaded``/``policy_rejected``)
but not its text. The texts come from the PostgreSQL policy store when
``policy.source`` names one (it keeps every pushed version), and from the
policy in force; a version found in neither cannot be diffed.
"""

from __future__ import annotations

from dataclasses import dataclass

from guard._errors import GuardError
from guard.audit import Store
from guard.config import Settings
from guard.policy._compiled import CompiledPolicy
from guard.policy._diff import PolicyDiff, diff_policies


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """A policy loaded or rejected."""

    ts: str
    kind: str
    version: str
    detail: str
    writer_id: str
    event_id: str


def history(store: Store, limit: int = 500) -> list[PolicyEvent]:
    """Policy events, newest first."""
    sql = ("SELECT ts, kind, policy_version, detail, writer_id, event_id FROM audit_event "  # noqa: S608 - constant SQL
           "WHERE kind IN ('policy_loaded', 'policy_rejected') "
           f"ORDER BY ts DESC, event_id DESC LIMIT {int(limit)}")
    rows = store.rows(sql)
    return [PolicyEvent(str(r[0]), str(r[1]), str(r[2]), str(r[3] or ""), str(r[4]), str(r[5]))
            for r in rows]


def _stored(url: str, version: str) -> CompiledPolicy | None:
    import psycopg

    from guard.policy._load import compile_policy

    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            row = conn.execute(
                "SELECT model_text, rules_text, origin FROM guard_policy WHERE version = %s "
                "ORDER BY id DESC LIMIT 1", (version,)).fetchone()
    except psycopg.Error:
        return None
    if row is None:
        return None
    return compile_policy(str(row[0]), str(row[1]), f"policy store: {row[2]}")


def find_policy(settings: Settings, current: CompiledPolicy | None,
                version: str) -> CompiledPolicy | None:
    """The compiled policy of ``version``, if its text is available."""
    if current is not None and current.version == version:
        return current
    source = settings.policy.source
    if source.startswith(("postgresql://", "postgres://")):
        try:
            return _stored(source, version)
        except GuardError:
            return None
    return None


def diff(settings: Settings, current: CompiledPolicy | None, old: str,
         new: str) -> tuple[PolicyDiff | None, list[str]]:
    """The access diff from ``old`` to ``new``, or None and the versions whose text is missing."""
    old_policy = find_policy(settings, current, old)
    new_policy = find_policy(settings, current, new)
    missing = [v for v, p in ((old, old_policy), (new, new_policy)) if p is None]
    if old_policy is None or new_policy is None:
        return None, missing
    return diff_policies(old_policy, new_policy), []
