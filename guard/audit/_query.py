"""One query layer over both stores: filters, statistics and the subject's accesses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from guard._errors import GuardError
from guard.audit._event import FIELD_NAMES, TS_FORMAT, AuditEvent
from guard.audit._fields import row_event
from guard.audit._schema import SUBJECT_MATCH
from guard.audit._store import Store


class AuditQueryError(GuardError):
    """A query argument the auditor got wrong (a bad date, an empty filter value...)."""


_SPAN = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, *, option: str = "--since", now: datetime | None = None) -> str:
    """An ISO date, an ISO date-time or a span back from now (``7d``, ``12h``) as a ``ts`` bound."""
    value = text.strip()
    span = _SPAN.match(value)
    try:
        if span:
            moment = (now or datetime.now(UTC)) - timedelta(
                **{_UNITS[span.group(2)]: int(span.group(1))})
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime(TS_FORMAT)
    except OverflowError:
        raise AuditQueryError(
            f"bad {option} value {text!r}: outside the years 1 to 9999") from None
    except ValueError:
        raise AuditQueryError(
            f"bad {option} value {text!r}: use a date (2026-11-01), a date-time "
            "(2026-11-01T09:30:00Z) or a span back from now (30m, 12h, 7d, 2w)"
        ) from None


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which decisions to select; every field narrows the result.

    ``purpose`` and ``category`` are tree-aware: ``marketing`` matches
    ``marketing`` and every ``marketing.*`` key. ``subject`` is a pseudonym.
    ``since``/``until`` are ``ts`` bounds as returned by :func:`parse_when`.
    """

    caller: str | None = None
    purpose: str | None = None
    category: str | None = None
    allowed: bool | None = None
    reason: str | None = None
    subject: str | None = None
    since: str | None = None
    until: str | None = None
    kind: str = "decision"

    def where(self, store: Store) -> tuple[str, list[Any]]:
        """The SQL condition on ``audit_event e`` (``?`` placeholders) and its parameters.

        Args:
            store: The store it runs on, which says how a subject's events are found
                (SQLite: through its subject index ``audit_subject``).
        """
        clauses = ["e.kind = ?"]
        params: list[Any] = [self.kind]
        allowed = None if self.allowed is None else int(self.allowed)
        for column, op, value in (("caller", "=", self.caller), ("allowed", "=", allowed),
                                  ("reason", "=", self.reason),
                                  ("ts", ">=", self.since), ("ts", "<", self.until)):
            if value is not None:
                clauses.append(f"e.{column} {op} ?")
                params.append(value)
        if self.subject is not None:
            match = SUBJECT_MATCH["sqlite" if store.url.startswith("sqlite:") else "postgresql"]
            clauses.append(match)
            params += [self.subject] * match.count("?")
        if self.purpose is not None:
            key = self.purpose.rstrip(".")
            clauses.append("(e.purpose = ? OR (e.purpose >= ? AND e.purpose < ?))")
            params += [key, key + ".", key + "/"]  # '/' sorts right after '.'
        if self.category is not None:
            key = self.category.rstrip(".").replace("\\", "\\\\").replace("%", "\\%") \
                .replace("_", "\\_")  # LIKE's wildcards, literally
            clauses.append("(e.categories LIKE ? ESCAPE '\\' OR e.categories LIKE ? ESCAPE '\\')")
            params += [f'%"{key}"%', f'%"{key}.%']
        return " AND ".join(clauses), params


E_COLUMNS = ", ".join(f"e.{name}" for name in FIELD_NAMES)
OUTCOME = ("COALESCE((SELECT max(o.http_status) FROM audit_event o "
           "WHERE o.decision_ref = e.event_id AND o.kind = 'outcome'), e.http_status)")
"""A decision's final HTTP status: its ``outcome`` event's (a write: recorded before its
handler ran), else the decision's own ``http_status`` (a read or a denial: one event,
recorded with the status it was answered with)."""


@dataclass(frozen=True, slots=True)
class QueryRow:
    """A decision and its final HTTP status (:data:`OUTCOME`), if any."""

    event: AuditEvent
    outcome_status: int | None


def query_events(store: Store, where: EventFilter, *, limit: int | None = 100,
                 oldest_first: bool = False) -> list[QueryRow]:
    """Matching events, newest first (or oldest first)."""
    condition, params = where.where(store)
    order = "" if oldest_first else " DESC"
    sql = (f"SELECT {E_COLUMNS}, {OUTCOME} FROM audit_event e WHERE {condition} "  # noqa: S608 - constant SQL
           f"ORDER BY e.ts{order}, e.event_id{order}")
    if limit is not None:
        if limit < 1:
            raise AuditQueryError(f"--limit must be at least 1, not {limit}")
        sql += f" LIMIT {int(limit)}"
    return [QueryRow(stored_event(row[:-1]), row[-1]) for row in store.rows(sql, params)]


_NULLABLE = frozenset({"party_type", "country", "allowed", "subject", "http_method",
                       "http_route", "http_status", "trace_id", "span_id", "latency_us",
                       "decision_ref", "detail"})
_LISTS = frozenset({"categories", "rule", "lawful_basis"})
_INTS = frozenset({"http_status", "latency_us", "seq"})


def stored_event(row: Sequence[Any]) -> AuditEvent:
    """The event of a row selected with ``EVENT_COLUMNS``, each value of the type the guard
    writes; :class:`AuditQueryError` (one line naming the event) for a row written around
    the guard (a list column that is no list of texts, a number where text is...), which
    ``guard audit verify`` names, rather than a traceback wherever it is shown."""
    try:
        event = row_event(row)
    except (ValueError, TypeError) as exc:
        raise _not_written(row, str(exc)) from None
    for name in FIELD_NAMES:
        value = getattr(event, name)
        if name in _LISTS:
            ok = all(type(item) is str for item in value)
        elif name in ("kind", "allowed") or (value is None and name in _NULLABLE):
            ok = True
        else:
            ok = type(value) is (int if name in _INTS else str)
        if not ok:
            raise _not_written(row, f"its {name} is {value!r}")
    return event


def _not_written(row: Sequence[Any], why: str) -> AuditQueryError:
    return AuditQueryError(f"audit event {str(row[0])[:64]!r} is not as the guard writes it "
                           f"({why[:120]}): it was written around the guard; run guard audit "
                           "verify")


@dataclass(frozen=True, slots=True)
class Count:
    """Decisions for one key (a caller, a purpose or a reason)."""

    key: str
    total: int
    allowed: int
    denied: int


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts of decisions by caller, purpose and reason; each list has denials first."""

    since: str | None
    total: int
    allowed: int
    denied: int
    by_caller: tuple[Count, ...]
    by_purpose: tuple[Count, ...]
    by_reason: tuple[Count, ...]


def stats(store: Store, where: EventFilter) -> Stats:
    """Decision counts grouped three ways, most denials first."""
    condition, params = where.where(store)
    sums = ("count(*), sum(CASE WHEN e.allowed = 1 THEN 1 ELSE 0 END), "
            "sum(CASE WHEN e.allowed = 0 THEN 1 ELSE 0 END)")

    def grouped(column: str) -> tuple[Count, ...]:
        sql = (f"SELECT e.{column}, {sums} FROM audit_event e WHERE {condition} "  # noqa: S608 - constant SQL
               f"GROUP BY e.{column}")
        counts = [Count(str(r[0]), int(r[1]), int(r[2] or 0), int(r[3] or 0))
                  for r in store.rows(sql, params)]
        return tuple(sorted(counts, key=lambda c: (-c.denied, -c.total, c.key)))

    row = store.rows(f"SELECT {sums} FROM audit_event e WHERE {condition}", params)[0]  # noqa: S608 - constant SQL
    return Stats(where.since, int(row[0]), int(row[1] or 0), int(row[2] or 0),
                 grouped("caller"), grouped("purpose"), grouped("reason"))
