"""The console's read queries: filtered decisions paged by keyset, one event, the live tail."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from guard.audit import AuditEvent, AuditQueryError, EventFilter, EventKind, Store, parse_when
from guard.audit._event import FIELD_NAMES, TS_FORMAT
from guard.audit._query import E_COLUMNS, OUTCOME, stored_event

_LIST_COLUMNS = tuple(FIELD_NAMES.index(name) for name in ("categories", "rule", "lawful_basis"))
_ALLOWED = FIELD_NAMES.index("allowed")
_KIND = FIELD_NAMES.index("kind")
LAST_TS = "9999-12-31T23:59:59.999999Z"
"""After every ``ts`` the guard writes."""


@dataclass(frozen=True, slots=True)
class Filters:
    """The decision table's filters, as typed by the auditor (all optional).

    Args:
        since: Start of the time range: a date, a date-time or a span back (``7d``).
        until: End of the time range (exclusive), same forms.
        caller: Exact caller id.
        party_type: ``internal``, ``processor``...
        country: ISO 3166 alpha-2 code.
        purpose: A purpose key; its sub-purposes match too.
        category: A category key; its sub-categories match too.
        reason: A reason code.
        outcome: ``allowed``, ``denied`` or empty for both.
        route: An HTTP route template, e.g. ``/customers/{customer_id}``.
        policy_version: A policy version digest.
    """

    since: str = ""
    until: str = ""
    caller: str = ""
    party_type: str = ""
    country: str = ""
    purpose: str = ""
    category: str = ""
    reason: str = ""
    outcome: str = ""
    route: str = ""
    policy_version: str = ""

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Filters:
        """Read the filters from query parameters; unknown parameters are ignored."""
        return cls(**{f.name: params.get(f.name, "").strip()[:200] for f in fields(cls)})

    def items(self) -> list[tuple[str, str]]:
        """The non-empty filters as (name, value) pairs, for links."""
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)]

    def where(self, store: Store) -> tuple[str, list[Any]]:
        """The SQL condition over alias ``e`` (``?`` placeholders) and its parameters.

        Args:
            store: The store it runs on (:meth:`EventFilter.where`).

        Raises:
            AuditQueryError: a bad date or outcome value.
        """
        if self.outcome not in ("", "allowed", "denied"):
            raise AuditQueryError(f"outcome must be allowed or denied, not {self.outcome!r}")
        base = EventFilter(
            caller=self.caller or None,
            purpose=self.purpose or None,
            category=self.category or None,
            allowed=None if not self.outcome else self.outcome == "allowed",
            reason=self.reason or None,
            since=parse_when(self.since, option="from") if self.since else None,
            until=parse_when(self.until, option="to") if self.until else None,
        )
        condition, params = base.where(store)
        for column, value in (("party_type", self.party_type), ("country", self.country),
                              ("http_route", self.route),
                              ("policy_version", self.policy_version)):
            if value:
                condition += f" AND e.{column} = ?"
                params.append(value.upper() if column == "country" else value)
        return condition, params


@dataclass(frozen=True, slots=True)
class Row:
    """A decision and the final HTTP status recorded for it."""

    event: AuditEvent
    status: int | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of decisions, newest first, and the cursor of the next (older) page."""

    rows: tuple[Row, ...]
    next_cursor: str | None


def encode_cursor(event: AuditEvent) -> str:
    """An opaque cursor after ``event``: its ``ts`` and id, URL-safe."""
    return base64.urlsafe_b64encode(f"{event.ts}|{event.event_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The (ts, event_id) a cursor names.

    Raises:
        AuditQueryError: not a cursor this console made.
    """
    try:
        ts, sep, event_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        ts, sep, event_id = "", "", ""
    if not sep or not ts or not event_id:
        raise AuditQueryError("the page cursor is not valid; start again from the first page")
    return ts, event_id


def _rows(store: Store, sql: str, params: list[Any]) -> list[Row]:
    """The decisions ``sql`` selects (``E_COLUMNS``, then the final status), as rows.

    What :func:`~guard.audit._fields.row_event` builds, but each distinct text of a list column
    (categories, rule, lawful basis) is decoded once per read: a subject's thousands
    of decisions repeat a few dozen texts, and decoding each one was half the read.
    """
    lists: dict[str, tuple[str, ...]] = {}
    out = []
    for row in store.rows(sql, params):
        values = list(row[:-1])
        try:
            for index in _LIST_COLUMNS:
                found = lists.get(values[index])
                if found is None:
                    found = tuple(json.loads(values[index]))
                    if not all(type(item) is str for item in found):
                        raise TypeError("a list column holds more than texts")
                    lists[values[index]] = found
                values[index] = found
            values[_KIND] = EventKind(values[_KIND])
        except (ValueError, TypeError):  # a row written around the guard: one line naming
            stored_event(row[:-1])  # it (AuditQueryError), as guard audit query says
            raise  # pragma: no cover - stored_event refuses what failed here
        if values[_ALLOWED] is not None:
            values[_ALLOWED] = bool(values[_ALLOWED])
        out.append(Row(AuditEvent(*values), row[-1]))
    return out


def decisions_page(store: Store, filters: Filters, *, cursor: str | None, size: int) -> Page:
    """One page of matching decisions, newest first, after ``cursor``.

    Keyset paging on ``(ts, event_id)``: each page costs the same however deep it is.
    """
    condition, params = filters.where(store)
    # A ts bound on every page lets the planner walk the ts index down from it and
    # stop after one page (without one, SQLite sorts the whole table).
    if cursor:
        ts, event_id = decode_cursor(cursor)
        condition += " AND e.ts <= ? AND (e.ts < ? OR e.event_id < ?)"
        params += [ts, ts, event_id]
    else:
        condition += " AND e.ts <= ?"
        params.append(LAST_TS)
    sql = (f"SELECT {E_COLUMNS}, {OUTCOME} FROM audit_event e WHERE {condition} "  # noqa: S608 - constant SQL
           f"ORDER BY e.ts DESC, e.event_id DESC LIMIT {int(size) + 1}")
    rows = _rows(store, sql, params)
    more = len(rows) > size
    rows = rows[:size]
    return Page(tuple(rows), encode_cursor(rows[-1].event) if more and rows else None)


def newer_than(store: Store, filters: Filters, ts: str, *, limit: int = 200) -> list[Row]:
    """Matching decisions with ``ts`` at or after ``ts``, oldest first (for the live tail)."""
    condition, params = filters.where(store)
    sql = (f"SELECT {E_COLUMNS}, {OUTCOME} FROM audit_event e "  # noqa: S608 - constant SQL
           f"WHERE {condition} AND e.ts >= ? ORDER BY e.ts, e.event_id LIMIT {int(limit)}")
    return _rows(store, sql, [*params, ts])


class Tail:
    """Follows new matching decisions for the live tail.

    A decision's ``ts`` is stamped before it is committed, so with several writers
    one can land with a ``ts`` a little older than decisions already shown. The
    tail therefore re-reads a short window behind the newest ``ts`` it has seen and
    remembers which events it already sent. More than ``limit`` decisions inside
    the window (hundreds a second) are skipped: a person cannot read them anyway.

    Args:
        store: The audit store.
        filters: The table's filters.
        lookback: Seconds re-read behind the newest ``ts`` seen.
        limit: Most rows read per poll.
    """

    def __init__(self, store: Store, filters: Filters, *, lookback: float = 5.0,
                 limit: int = 1000) -> None:
        self._store = store
        self._filters = filters
        self._lookback = timedelta(seconds=lookback)
        self._limit = limit
        self._seen: dict[str, str] = {}
        self._newest = ""

    def _behind(self) -> str:
        newest = datetime.strptime(self._newest, TS_FORMAT).replace(tzinfo=UTC)
        return (newest - self._lookback).strftime(TS_FORMAT)

    def start(self) -> None:
        """Take everything already stored as seen."""
        self._newest = latest_ts(self._store) or datetime.now(UTC).strftime(TS_FORMAT)
        self._read()

    def poll(self) -> list[Row]:
        """Matching decisions stored since the last poll (or start), oldest first."""
        return self._read()

    def _read(self) -> list[Row]:
        bound = self._behind()
        rows = newer_than(self._store, self._filters, bound, limit=self._limit)
        if len(rows) == self._limit:  # a flood: move on from the newest read
            self._newest = rows[-1].event.ts
        fresh = [r for r in rows if r.event.event_id not in self._seen]
        for row in rows:
            self._seen[row.event.event_id] = row.event.ts
            self._newest = max(self._newest, row.event.ts)
        bound = self._behind()
        self._seen = {k: ts for k, ts in self._seen.items() if ts >= bound}
        return fresh


def latest_ts(store: Store) -> str:
    """The newest ``ts`` in the store, or an empty string."""
    row = store.rows("SELECT max(ts) FROM audit_event")
    return str(row[0][0]) if row and row[0][0] else ""


@dataclass(frozen=True, slots=True)
class EventDetail:
    """One event with its outcomes (for a decision) or its decision (for an outcome)."""

    event: AuditEvent
    related: tuple[AuditEvent, ...]


def event_detail(store: Store, event_id: str) -> EventDetail | None:
    """The event ``event_id`` and the events linked to it, or None."""
    found = store.rows(f"SELECT {E_COLUMNS} FROM audit_event e WHERE e.event_id = ?",  # noqa: S608 - constant SQL
                       [event_id])
    if not found:
        return None
    event = stored_event(found[0])
    if event.decision_ref:
        related = store.rows(f"SELECT {E_COLUMNS} FROM audit_event e WHERE e.event_id = ?",  # noqa: S608 - constant SQL
                             [event.decision_ref])
    else:
        related = store.rows(
            f"SELECT {E_COLUMNS} FROM audit_event e WHERE e.decision_ref = ? "  # noqa: S608 - constant SQL
            "ORDER BY e.ts", [event_id])
    return EventDetail(event, tuple(stored_event(r) for r in related))


REFUSED_LISTED = 10_000
"""The most refused decisions about one subject read as rows (the rest are counted)."""


def subject_events(store: Store, pseudonym: str,
                   refused_listed: int = REFUSED_LISTED) -> list[Row]:
    """The decisions about one data subject, oldest first: every allowed one, and the
    oldest ``refused_listed`` refused ones (:func:`refused_count` counts them all).

    Anyone may send requests naming a subject with no credentials, each refused and
    recorded under the subject's pseudonym: read whole, a flood of them would fill the
    console's memory when the subject's report is opened.

    Args:
        store: The audit store.
        pseudonym: The subject's pseudonym.
        refused_listed: The most refused decisions read as rows.
    """
    allowed, params = EventFilter(subject=pseudonym, allowed=True).where(store)
    refused, more = EventFilter(subject=pseudonym, allowed=False).where(store)
    rows = _rows(store, (  # one read: every allowed decision, then the oldest refused ones
        f"SELECT * FROM (SELECT {E_COLUMNS}, {OUTCOME} FROM audit_event e WHERE {allowed}) a "  # noqa: S608 - constant SQL
        f"UNION ALL SELECT * FROM (SELECT {E_COLUMNS}, {OUTCOME} FROM audit_event e "
        f"WHERE {refused} ORDER BY e.ts, e.event_id LIMIT {int(refused_listed)}) r"),
        [*params, *more])
    rows.sort(key=lambda r: (r.event.ts, r.event.event_id))
    return rows


def refused_count(store: Store, pseudonym: str) -> int:
    """How many decisions about one data subject were refused."""
    condition, params = EventFilter(subject=pseudonym, allowed=False).where(store)
    counted = store.rows(f"SELECT count(*) FROM audit_event e WHERE {condition}", params)  # noqa: S608 - constant SQL
    return int(counted[0][0])

