"""The subject register: entries in the audit store, their state in memory, kept in step."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from guard.audit._event import EventKind, utc_now
from guard.policy._compiled import CompiledPolicy
from guard.rights._entries import (
    Entry,
    Record,
    RegisterRefusedError,
    RegisterUnreadableError,
    State,
    fold,
)
from guard.rights._index import BITMAP_SHIFT, SubjectIndex, split_digest
from guard.rights._store import CHANNEL, RegisterStore
from guard.rights._validate import Change, validate

_log = logging.getLogger("guard.rights")

RecordEvent = Callable[[EventKind, dict[str, Any]], str]
"""Records an audit event from its fields (raw ``subject_id``); returns its id once durable."""

DIGESTS = 4096
"""Subjects whose keyed digest :meth:`Register.lookup` remembers (then it forgets them all)."""

POLL_SECONDS = 0.25
"""SQLite: how often a running guard looks for entries other processes recorded."""

LISTEN_PARAMS: dict[str, str | int] = {
    "application_name": "guard-register-watcher",
    # TCP keepalives: a link a middlebox dropped silently is noticed within about a minute,
    # and the register is read again; without them the replica would wait for ever.
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}
"""PostgreSQL: connection parameters of the connection that listens for changes."""


def _hmac_pads(key: bytes) -> tuple[Any, Any]:
    """SHA-256 states after the inner and outer HMAC pads of ``key`` (RFC 2104)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)),
            hashlib.sha256(bytes(b ^ 0x5C for b in key)))


_BLOCK = 64  # SHA-256's block size


def _state(entries: list[Entry]) -> State:
    state: State = ()
    for entry in entries:
        state = fold(state, entry.record)
    return state


class Register:
    """What each data subject asked for, judged by every decision naming the subject.

    Args:
        hmac_key: The audit trail's subject key: the register knows subjects only
            by this keyed pseudonym.
        store: Where entries live (None: in memory only, for tests and benchmarks).
    """

    def __init__(self, hmac_key: bytes, store: RegisterStore | None = None) -> None:
        self._key = hmac_key
        self._inner, self._outer = _hmac_pads(hmac_key)
        self._digests: dict[str, tuple[int, bytes]] = {}
        """Raw subject id -> its digest's first index key and the digest, the latest
        DIGESTS looked up."""
        self.store = store
        self.index = SubjectIndex()
        self._refresh_lock = threading.Lock()
        self._record_lock = threading.Lock()
        """One change at a time: each is judged on the entries before it, and stored in the
        order of its audit event (``guard audit verify`` checks that order)."""
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._last_rowid = 0
        self.listening: bool | None = None
        """PostgreSQL: whether changes of other replicas are heard right now."""
        self.unreadable: str | None = None
        """The pseudonym of a subject whose rows could not be read while following."""

    @classmethod
    def open(cls, url: str, hmac_key: bytes, *, watch: bool = False) -> Register:
        """Open the register in the audit store at ``url`` and load it.

        Args:
            url: The audit store URL.
            hmac_key: The subject HMAC key.
            watch: Follow changes other processes or replicas record (a running guard).
        """
        register = cls(hmac_key, RegisterStore(url))
        try:
            register.reload()
            if watch:
                register.watch()
        except BaseException:
            register.close()
            raise
        return register

    @property
    def digests(self) -> Mapping[str, tuple[int, bytes]]:
        """The keyed digests :meth:`lookup` keeps (raw id -> index key, digest), live:
        the audit writer pseudonymises those subjects from them."""
        return self._digests

    # -- decisions (hot path) ----------------------------------------------------------------

    def lookup(self, subject: str) -> State | None:
        """The subject's entries in force; None when the subject has no entry.

        The index is asked every time (a change applies to the next look-up); only
        the subject's keyed digest, which never changes, is remembered for the
        latest :data:`DIGESTS` subjects. While no subject has an entry, no digest is
        made: every subject is a miss (the id is still encoded, so one the digest
        could not be made of raises as it would).
        """
        digests = self._digests
        known = digests.get(subject)
        if known is None:
            raw = subject.encode()
            if self.index.empty:  # no subject has an entry: every one is a miss
                return None
            # HMAC-SHA256 from precomputed pads: a third of hmac.digest's cost per call.
            inner = self._inner.copy()
            inner.update(raw)
            outer = self._outer.copy()
            outer.update(inner.digest())
            digest = outer.digest()
            if len(digests) >= DIGESTS:
                digests.clear()
            known = digests[subject] = (int.from_bytes(digest[:8], "big"), digest)
        hi = known[0]
        index = self.index
        bit = hi >> BITMAP_SHIFT  # the index's bitmap, read inline: the common miss
        if not index.bitmap[bit >> 3] & (1 << (bit & 7)):
            return None
        return index.get(hi, int.from_bytes(known[1][8:16], "big"))

    def pseudonym(self, subject: str) -> str:
        """The subject's keyed pseudonym, as the audit trail and the store know it.

        Raises:
            RegisterRefusedError: the id is not text UTF-8 can encode.
        """
        try:
            raw = subject.encode()
        except UnicodeEncodeError:
            raise RegisterRefusedError("the subject id is not valid UTF-8 text") from None
        return hmac.digest(self._key, raw, "sha256").hex()

    # -- changes -----------------------------------------------------------------------------

    def record(self, change: Change, policy: CompiledPolicy, record_event: RecordEvent) -> Entry:
        """Check ``change``, record its audit event, append the entry and apply it.

        Raises:
            RegisterRefusedError: the change is refused; nothing was recorded.
            AuditUnavailableError: the audit trail or the store could not take it.
        """
        with self._record_lock:
            return self._record(change, policy, record_event)

    def _record(self, change: Change, policy: CompiledPolicy, record_event: RecordEvent
                ) -> Entry:
        pseudonym = self.pseudonym(change.subject)
        looked = self.lookup(change.subject)
        current = looked or ()
        validate(policy, current, change, known=looked is not None)
        now = utc_now()
        effective = change.effective or datetime.now(UTC).date()
        entry = Entry(pseudonym, 0, uuid.uuid4().hex, change.kind, change.purpose, effective,
                      now, change.who, change.ref, "")
        record = entry.record
        detail = {"entry": change.kind.value, "entry_id": entry.entry_id,
                  "effective": effective.isoformat(), "ref": change.ref or None,
                  "recorded_at": now}
        event_id = record_event(EventKind.SUBJECT_RIGHT, {
            "caller": change.who,
            "purpose": change.purpose,
            "reason": change.kind.value,
            "rule": (record.rule,),
            "policy_version": policy.version,
            "subject_id": change.subject,
            "detail": json.dumps(detail, sort_keys=True, separators=(",", ":")),
        })
        entry = Entry(pseudonym, 0, entry.entry_id, entry.kind, entry.purpose, effective, now,
                      change.who, change.ref, event_id)
        if self.store is None:
            stored = entry
            self._put(pseudonym, fold(current, record))
        else:
            stored = self.store.append(entry)
            self.refresh(pseudonym)
        return stored

    def apply(self, pseudonym: str, records: list[Record]) -> None:
        """Put a subject's state built from ``records`` (in memory only: tests, benchmarks)."""
        state: State = ()
        for record in records:
            state = fold(state, record)
        self._put(pseudonym, state)

    def _put(self, pseudonym: str, state: State) -> None:
        hi, lo = split_digest(bytes.fromhex(pseudonym))
        self.index.put(hi, lo, state)

    # -- reading and following the store -----------------------------------------------------

    def history(self, subject: str) -> list[Entry]:
        """Every entry of a subject (raw id), oldest first."""
        return self.history_of(self.pseudonym(subject))

    def history_of(self, pseudonym: str) -> list[Entry]:
        """Every entry of a subject known by pseudonym, oldest first."""
        return self.store.history(pseudonym) if self.store is not None else []

    def state_of(self, pseudonym: str) -> State:
        """The entries in force of a subject known by pseudonym."""
        hi, lo = split_digest(bytes.fromhex(pseudonym))
        return self.index.get(hi, lo) or ()

    def refresh(self, pseudonym: str) -> None:
        """Read one subject's entries again from the store."""
        if self.store is None:
            return
        with self._refresh_lock:
            self._put(pseudonym, _state(self.store.history(pseudonym)))

    def reload(self) -> None:
        """Read every entry again and rebuild the index."""
        if self.store is None:
            return
        with self._refresh_lock:
            self._last_rowid = 0 if self.store.postgres else self.store.last_rowid()
            self.index.load(self._grouped(self.store.every_entry()))

    @staticmethod
    def _grouped(entries: Iterator[Entry]) -> Iterator[tuple[int, int, State]]:
        subject, state = "", cast(State, ())
        for entry in entries:
            if entry.subject != subject:
                if subject:
                    yield (*split_digest(bytes.fromhex(subject)), state)
                subject, state = entry.subject, ()
            state = fold(state, entry.record)
        if subject:
            yield (*split_digest(bytes.fromhex(subject)), state)

    def watch(self) -> None:
        """Follow other processes' changes: LISTEN on PostgreSQL, poll SQLite."""
        if self.store is None or self._watcher is not None:
            return
        if self.store.postgres:  # not heard until LISTEN and the register read again
            self.listening = False
        target = self._listen if self.store.postgres else self._poll
        self._watcher = threading.Thread(target=target, name="guard-register-watcher",
                                         daemon=True)
        self._watcher.start()

    def _poll(self) -> None:
        assert self.store is not None
        while not self._stop.wait(POLL_SECONDS):
            try:
                with self._refresh_lock:
                    last, subjects = self.store.changed_since(self._last_rowid)
                    unread = [pseudonym for pseudonym in subjects if not self._read(pseudonym)]
                    self._last_rowid = last
                self.unreadable = unread[0] if unread else self.unreadable
            except Exception:  # keep following; decisions use the last state read
                _log.exception("cannot read the subject register")

    def _read(self, pseudonym: str) -> bool:
        """Put one subject's state read from the store; False (logged, its last state kept)
        when a row of it is no entry the guard wrote: the other subjects' changes, and every
        later one, are still followed."""
        assert self.store is not None
        try:
            self._put(pseudonym, _state(self.store.history(pseudonym)))
        except RegisterUnreadableError as exc:
            _log.error("the subject register's entries of %s... cannot be read; its last "
                       "state read is kept: %s", pseudonym[:12], exc)
            return False
        return True

    def _listen(self) -> None:
        import psycopg  # PostgreSQL's alone: not imported for SQLite

        assert self.store is not None
        first = True
        while not self._stop.is_set():
            try:
                url = psycopg.conninfo.make_conninfo(self.store.url, **LISTEN_PARAMS)
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.reload()  # changes before LISTEN (or while disconnected)
                    self.listening = True  # following once read again, not before
                    first = False
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            with self._refresh_lock:
                                if not self._read(note.payload):
                                    self.unreadable = note.payload
            except Exception as exc:
                self.listening = False
                if first:
                    _log.warning("cannot listen for register changes: %s", exc)
                self._stop.wait(1.0)

    def status(self) -> dict[str, object]:
        """For health checks: subjects with entries, and whether other changes are followed."""
        watcher = self._watcher
        following: bool | None = None
        if watcher is not None:
            following = watcher.is_alive() and (self.listening is not False)
        status: dict[str, object] = {"subjects": len(self.index), "following": following}
        if self.unreadable is not None:  # which subject: the log says (/readyz is anyone's)
            status["unreadable_rows"] = True
        return status

    def close(self) -> None:
        """Stop following changes and release the store."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        if self.store is not None:
            self.store.close()
