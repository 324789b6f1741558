"""``guard audit verify``: walk every writer's hash chain and check its signed checkpoints."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, replace
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard._errors import ConfigError
from guard.audit._checkpoint import Checkpoint, CheckpointKind, Terms
from guard.audit._event import FIELD_NAMES, GENESIS_HASH, ts_epoch
from guard.audit._fields import ChainKey, Linker, content, row_event
from guard.audit._schema import (
    CHECKPOINT_COLUMNS,
    EVENT_COLUMNS,
    SUBJECT_INDEX_DDL,
    SUBJECT_TOKEN,
    row_checkpoint,
)
from guard.audit._store import AuditStoreError, Store, sqlite_path
from guard.audit._witness import WitnessRead


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong in one writer's chain.

    ``kind`` is ``altered``, ``deleted``, ``inserted``, ``reordered``, ``truncated``,
    ``unsigned`` or ``bad_checkpoint``; ``event_id`` names the first bad event (or,
    for a truncated tail or deletion, the event right before or after the gap).
    """

    kind: str
    writer_id: str
    seq: int | None
    event_id: str | None
    message: str

    def __str__(self) -> str:
        where = f"event {self.event_id} (writer {self.writer_id}, seq {self.seq})"
        if self.event_id is None:
            where = f"writer {self.writer_id}"
        return f"{self.kind}: {where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Unread:
    """A part of the store verify could not read (locked, busy, an I/O error): no finding
    either way; run verify again."""

    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What verify found."""

    events: int
    writers: int
    checkpoints: int
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = ()
    unread: tuple[Unread, ...] = ()
    """What could not be read: ``ok`` holds for the rest only, and the check is unfinished."""

    @property
    def ok(self) -> bool:
        return not self.problems


class _Row(NamedTuple):
    seq: int
    event_id: str
    prev: str
    hash: str
    ok: bool
    ts: str


def check_chain(writer: str, rows: list[_Row], seq: int = 1, prev: str = GENESIS_HASH
                ) -> Problem | None:
    """The first break in a chain (rows sorted by seq) that starts at ``seq`` after ``prev``."""
    by_hash = {r.hash: i for i, r in enumerate(rows)}
    exp_seq, exp_prev = seq, prev
    for i, r in enumerate(rows):
        if r.seq == exp_seq and r.ok and r.prev == exp_prev:
            exp_seq, exp_prev = exp_seq + 1, r.hash
            continue

        def problem(kind: str, row: _Row, message: str) -> Problem:
            return Problem(kind, writer, row.seq, row.event_id, message)

        if r.seq < exp_seq:
            return problem("inserted", r, f"a second event claims seq {r.seq}")
        if r.prev == exp_prev:
            return problem("altered", r, "its hash does not match its content (edited, or "
                                         "made by someone without the chain key)")
        if r.prev == GENESIS_HASH:
            return problem("inserted", r, "a second chain start inside the chain")
        pred = by_hash.get(r.prev)
        if pred == i:
            return problem("altered", r, "it names itself as its predecessor")
        if pred is None and r.ok and r.seq == exp_seq and i > 0:
            return problem("altered", rows[i - 1],
                           f"it was changed and re-hashed; {r.event_id} no longer links to it")
        if pred is None:
            gap = f"seq {exp_seq}..{r.seq - 1}" if r.seq > exp_seq else "renumbered"
            return problem("deleted", r, f"the event(s) before it are missing ({gap})")
        if pred > i:
            return problem("reordered", r,
                           f"it comes before its predecessor {rows[pred].event_id}")
        extra = rows[pred + 1]
        return problem("inserted", extra, f"not part of the chain: {r.event_id} follows "
                                          f"{rows[pred].event_id} directly")
    return None


def _check_checkpoints(
    writer: str, rows: list[_Row], valid: list[Checkpoint]
) -> tuple[Problem | None, str | None]:
    """Problems the signed checkpoints reveal in an otherwise linked chain, and a note."""
    first = rows[0] if rows else None
    if not any(cp.kind is CheckpointKind.OPEN for cp in valid):
        return Problem("inserted", writer, first.seq if first else None,
                       first.event_id if first else None,
                       "the chain has no signed opening checkpoint"), None
    last_seq = rows[-1].seq if rows else 0
    for cp in valid:
        if cp.seq == 0:
            continue
        if cp.seq > last_seq:
            after = f"after event {rows[-1].event_id}" if rows else "(no event left)"
            return Problem("truncated", writer, last_seq + 1, rows[-1].event_id if rows else None,
                           f"events seq {last_seq + 1}..{cp.seq} are missing {after}; "
                           f"a checkpoint signed at {cp.ts} covers them"), None
        row = rows[cp.seq - 1]
        if row.hash != cp.hash:
            return Problem("altered", writer, row.seq, row.event_id,
                           f"the chain differs from the checkpoint signed at {cp.ts}"), None
    closes = [cp for cp in valid if cp.kind is CheckpointKind.CLOSE]
    if closes and last_seq > closes[0].seq:
        extra = rows[closes[0].seq]
        return Problem("inserted", writer, extra.seq, extra.event_id,
                       f"event after the writer's closing checkpoint (seq {closes[0].seq})"), None
    note = None
    signed = max((cp.seq for cp in valid), default=0)
    if not closes and last_seq > signed:
        note = (f"writer {writer}: {last_seq - signed} event(s) after its last signed checkpoint "
                "(the writer is running or stopped without closing)")
    return None, note


def _check_stretches(
    writer: str, rows: list[_Row], valid: list[Checkpoint], terms: Terms
) -> Problem | None:
    """The first unsigned stretch longer than the chain's signed terms allow, or None.

    A stretch is the events after one signed checkpoint up to the next (or to the
    end of the chain): at most ``terms.every`` events, spanning at most
    ``2 x terms.seconds + 5`` seconds by their timestamps (the writer signs within
    ``seconds`` of a stretch's first event; the rest allows for events that waited
    in the queue and for small clock steps).
    """
    marks = sorted({cp.seq for cp in valid} | {0})
    last_seq = rows[-1].seq if rows else 0
    if marks[-1] < last_seq:
        marks.append(last_seq)
    bound = 2 * terms.seconds + 5.0
    for start, end in itertools.pairwise(marks):
        if end - start > terms.every:
            row = rows[start + terms.every]
            return Problem("unsigned", writer, row.seq, row.event_id,
                           f"{end - start} events after the checkpoint at seq {start} are "
                           f"not signed; the writer signs at least every {terms.every}")
        stamps = [(ts_epoch(r.ts), r) for r in rows[start:end]]
        lowest = min((t for t, _ in stamps if t is not None), default=None)
        for t, r in stamps:
            if t is None or lowest is None or t - lowest > bound:
                return Problem("unsigned", writer, r.seq, r.event_id,
                               f"the unsigned stretch after seq {start} spans more than "
                               f"{bound:g} s; the writer signs within {terms.seconds:g} s")
    return None


def chain_terms(valid: list[Checkpoint]) -> Terms | None:
    """The chain's signed terms (from its checkpoints), or None for a chain made before them."""
    text = next((cp.terms for cp in valid if cp.terms is not None), None)
    try:
        return Terms.from_json(text) if text is not None else None
    except ValueError:
        return None


_EVENTS_SQL = f"SELECT {EVENT_COLUMNS} FROM audit_event ORDER BY writer_id, seq, event_id"  # noqa: S608
_CHECKPOINTS_SQL = f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoint"  # noqa: S608


def stored_checkpoints(store: Store, writer: str | None = None) -> list[Checkpoint]:
    where, params = (" WHERE writer_id = ?", (writer,)) if writer is not None else ("", ())
    return [_checkpoint(raw) for raw in store.stream(_CHECKPOINTS_SQL + where, params)]


def _checkpoint(raw: Sequence[Any]) -> Checkpoint:
    """A checkpoint row; one that is no checkpoint (a value of another type, an unknown kind,
    as a writer to a store or journal may leave) as one no key signed: named, no traceback."""
    try:
        cp = row_checkpoint(raw)
        if cp.well_typed():
            return cp
    except (ValueError, TypeError):
        pass
    return Checkpoint(str(raw[0]), str(raw[1]), -1, "", "", CheckpointKind.OPEN, "", "")


_SEQ, _WRITER, _PREV, _HASH, _TS = (FIELD_NAMES.index(name) for name in (
    "seq", "writer_id", "prev_hash", "hash", "ts"))


def light(raw: Sequence[Any], key: ChainKey | None, *, chain: int | None) -> _Row:
    """A stored row's chain position, and whether it is exactly what the guard wrote.

    Formats 4, 3 and 2 hash the stored columns themselves, as the journal writer
    linked them (:class:`guard.audit._fields.Linker`), so any changed value
    (``allowed = 2``, re-spaced JSON) breaks the hash. A keyed chain (its signed
    terms say ``chain`` 4 or 3) accepts only that format under ``key``; another
    chain also format 2, or 1 (events written before format 2). Formats 4 and 3
    need the key, so accepting them anywhere lets no one without the key forge a
    row. A row that cannot even be read is not intact.
    """
    writer, seq, prev, hash_ = (raw[i] for i in (_WRITER, _SEQ, _PREV, _HASH))
    keyed = chain in (3, 4)
    try:
        head = tuple(raw[:_WRITER])
        ok = type(seq) is int and (
            any(Linker(writer, key if c > 2 else None, c).link(head, seq, prev)[0] == hash_
                for c in ((chain or 4,) if keyed else (4, 3, 2)) if c == 2 or key is not None)
            or (not keyed and _format_1(raw)))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        ok = False
    return _Row(seq_of(raw), str(raw[0]), str(prev), str(hash_), ok, str(raw[_TS]))


def _format_1(raw: Sequence[Any]) -> bool:
    """Is ``raw`` a format-1 event exactly as stored? Its hash is SHA-256 of the canonical
    JSON of every field but ``hash`` (sorted keys, tuples as arrays, booleans)."""
    event = row_event(raw)
    data = event.to_dict()
    del data["hash"]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return (hashlib.sha256(text.encode()).hexdigest() == event.hash
            and content(event.kind, data, b"", event.ts, event.event_id) == tuple(raw[:_WRITER]))


def seq_of(raw: Sequence[Any]) -> int:
    """A row's ``seq`` as a number; -1 when it is not one."""
    try:
        return int(raw[_SEQ])
    except (ValueError, TypeError):
        return -1


def verify(
    store: Store,
    public: Ed25519PublicKey,
    *,
    chain_key: bytes | None = None,
    witness: WitnessRead | None = None,
) -> VerifyReport:
    """Check every chain and checkpoint in ``store`` against ``public``, the subject register
    against its events, and (SQLite) the subject index against the events.

    ``chain_key`` (:func:`guard.audit.derive_chain_key`) is needed for keyed (format 3 or 4)
    chains (ConfigError without it); each of the ``witness``'s checkpoints must verify, be
    in the store, and cover events the store still holds.
    """
    report = verify_chains(store.stream(_EVENTS_SQL), stored_checkpoints(store), public,
                           chain_key=chain_key, witness=witness)
    try:  # a read stopped now leaves the chains' findings said, with it beside them
        register: Problem | Unread | None = check_register(store)
    except AuditStoreError as exc:
        if not unreadable(exc):
            raise
        register = Unread(f"the subject register could not be read: {exc}")
    found = [p for p in (register, check_subject_index(store)) if p is not None]
    problems = tuple(p for p in found if isinstance(p, Problem))
    unread = tuple(p for p in found if isinstance(p, Unread))
    if not found:
        return report
    return replace(report, problems=(*report.problems, *problems), unread=unread)


_TERMS = "SELECT term, doc FROM temp.subject_terms ORDER BY term, doc"
_TOKENS = (f"SELECT lower({SUBJECT_TOKEN.format('subject')}) AS t, rowid, writer_id, seq, "  # noqa: S608
           "event_id FROM audit_event WHERE subject IS NOT NULL ORDER BY t, rowid")


_UNREAD_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_NOMEM, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL, sqlite3.SQLITE_INTERRUPT,
    sqlite3.SQLITE_FULL})
"""SQLite's result codes (primary) of a read the file's state or the machine stopped (a lock
another connection holds, no memory, an I/O error): no finding about what the file holds."""


def unreadable(exc: BaseException | None) -> bool:
    """Did SQLite stop a read for the file's state or the machine's (:data:`_UNREAD_CODES`),
    itself or as the cause of ``exc``?"""
    while exc is not None and not isinstance(exc, sqlite3.Error):
        exc = exc.__cause__
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _UNREAD_CODES


def check_subject_index(store: Store, *, timeout: float = 5.0) -> Problem | Unread | None:
    """SQLite: the first event with a subject that its subject index does not find, or None.

    A subject's events are found through ``audit_subject`` (FTS5), a table a writer to the
    store can change: an entry taken out hides its event from the subject's access report
    with every chain intact. Each event's token and row are looked for among the index's
    own (FTS5's ``fts5vocab`` of it, in a temporary table), in one read transaction. An
    index that is missing, not the schema's table (``sqlite_master``'s text against
    :data:`SUBJECT_INDEX_DDL`) or unreadable as one is named ``unindexed``; a read stopped
    by a lock (waited for ``timeout`` seconds) or the machine is :class:`Unread`, no
    finding.
    """
    if not store.url.startswith("sqlite:"):
        return None  # PostgreSQL's (subject, ts) index is the database's own
    conn = sqlite3.connect(sqlite_path(store.url), timeout=timeout, isolation_level=None)
    try:
        conn.execute("BEGIN")
        made = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'audit_subject'"
                            ).fetchall()
        if made != [(SUBJECT_INDEX_DDL,)]:
            what = "is missing" if not made else f"is not the schema's: {made[0][0]}"
            return Problem("unindexed", "(subject index)", None, None,
                           f"the subject index {what}; no subject query (an access report) "
                           "finds the events")
        conn.execute("CREATE VIRTUAL TABLE temp.subject_terms "
                     "USING fts5vocab(main, audit_subject, instance)")
        held = conn.execute(_TERMS)
        term = next(held, None)
        for token, rowid, writer, seq, event_id in conn.execute(_TOKENS):
            while term is not None and (term[0], term[1]) < (token, rowid):
                term = next(held, None)
            if term is None or (term[0], term[1]) != (token, rowid):
                return Problem("unindexed", writer, seq, event_id,
                               "the subject index does not find this event: a query for its "
                               "subject (an access report) leaves it out")
        return None
    except sqlite3.Error as exc:
        if unreadable(exc):
            return Unread(f"the subject index could not be read: {exc}")
        return Problem("unindexed", "(subject index)", None, None,  # its inner tables
                       f"the subject index cannot be read: {exc}")  # changed: damaged
    finally:
        conn.close()


_REGISTER_SQL = ("SELECT entry_id, subject, kind, purpose, effective, recorded_by, ref, event_id, "
                 "seq, recorded_at FROM subject_register ORDER BY subject, seq")
_RIGHTS_SQL = ("SELECT event_id, subject, reason, purpose, caller, detail, ts FROM audit_event "
               "WHERE kind = 'subject_right'")


def check_register(store: Store, *, settle: float = 1.0) -> Problem | None:
    """The first subject register entry that is not its ``subject_right`` event, or None.

    The guard enforces the register's rows, which are no part of a chain: each must be
    the very entry its chained event recorded (subject, kind, purpose, effective day,
    who, reference, and when, for an event that says it), each such event must have its
    row, and a subject's rows must be in the order of their events (the guard folds them
    in ``seq`` order: a withdrawal put before the grant it withdrew leaves the grant in
    force). So an entry planted (a
    consent no one gave), edited, reordered or deleted (an erasure or objection undone)
    by a writer to the store is named, as an edited event is. An entry is recorded while
    verify reads (its event durable first, then indexed, then its row stored): a mismatch
    is looked at again once, ``settle`` seconds later (past the index's lag), and only
    one that stays is named.
    """
    found = _register_mismatch(store)
    if found is not None and settle > 0:
        time.sleep(settle)
        found = _register_mismatch(store)
    return found


def _register_mismatch(store: Store) -> Problem | None:
    events: dict[str, tuple[Any, ...]] = {}
    order: dict[str, tuple[str, str]] = {}
    recorded: dict[str, str] = {}
    for event_id, subject, reason, purpose, caller, detail, ts in store.stream(_RIGHTS_SQL):
        try:
            said = json.loads(str(detail))
            entry = str(said["entry_id"])
            fields = (subject, reason, purpose or "", str(said["effective"]), caller,
                      said.get("ref") or "", event_id)
            when = said.get("recorded_at")  # events of entries recorded before it: none
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # no entry's event: the chain check covers what it holds
        events[entry] = fields
        order[entry] = (str(ts), str(event_id))
        if when is not None:
            recorded[entry] = str(when)
    last: tuple[Any, str, tuple[str, str]] | None = None  # subject, entry, its event's place
    for entry_id, subject, kind, purpose, effective, by, ref, event_id, seq, at in store.stream(
            _REGISTER_SQL):
        expected = events.pop(str(entry_id), None)
        if expected is None or expected != (subject, kind, purpose or "", str(effective), by,
                                            ref or "", event_id) or (
                str(entry_id) in recorded and recorded[str(entry_id)] != at):
            what = ("has no subject_right event" if expected is None
                    else "is not the entry its subject_right event recorded")
            return Problem("altered" if expected else "inserted", "(register)", None, None,
                           f"subject register entry {entry_id} ({kind}) {what}")
        if type(seq) is not int:
            return Problem("altered", "(register)", None, None,
                           f"subject register entry {entry_id} ({kind}) has a place (seq) "
                           f"that is no number: {seq!r}")
        place = order[str(entry_id)]
        if last is not None and last[0] == subject and place < last[2]:
            return Problem("reordered", "(register)", None, None,
                           f"subject register entry {entry_id} ({kind}, seq {seq}) is "
                           f"enforced after entry {last[1]}, whose subject_right event was "
                           "recorded after its own")
        last = (subject, str(entry_id), place)
    if events:
        entry_id, fields = next(iter(events.items()))
        return Problem("deleted", "(register)", None, None,
                       f"subject register entry {entry_id} ({fields[1]}), recorded by event "
                       f"{fields[-1]}, is missing from the register")
    return None


def verify_chains(
    events: Iterable[Sequence[Any]],
    checkpoints: Iterable[Checkpoint],
    public: Ed25519PublicKey,
    *,
    chain_key: bytes | None = None,
    witness: WitnessRead | None = None,
) -> VerifyReport:
    """:func:`verify` of rows and checkpoints read from anywhere: a store, a journal.

    ``events`` are rows of ``EVENT_COLUMNS``, each chain's ordered by ``seq``, then
    ``event_id``; ``checkpoints`` name each id once.
    """
    by_writer: dict[str, list[Checkpoint]] = defaultdict(list)
    stored_ids: set[str] = set()
    for cp in checkpoints:
        cp = cp if cp.well_typed() else _checkpoint(astuple(cp))  # noqa: PLW2901
        by_writer[cp.writer_id].append(cp)
        stored_ids.add(cp.checkpoint_id)
    cp_total = len(stored_ids)
    problems: dict[str, Problem] = {}
    witnessed: dict[str, list[Checkpoint]] = defaultdict(list)  # only in the witness
    if witness is not None and witness.bad_lines:
        lines = ", ".join(str(n) for n in witness.bad_lines[:5])
        problems["(witness)"] = Problem("bad_checkpoint", "(witness)", None, None,
                                        f"witness line(s) {lines} are not checkpoints")
    for cp in dict.fromkeys(witness.checkpoints if witness is not None else ()):  # once each
        if not cp.valid(public):
            problems.setdefault(cp.writer_id, Problem(
                "bad_checkpoint", cp.writer_id, cp.seq, None,
                f"witness checkpoint {cp.checkpoint_id} has an invalid signature"))
        elif cp.checkpoint_id not in stored_ids:
            by_writer[cp.writer_id].append(cp)
            witnessed[cp.writer_id].append(cp)
    for writer, cps in by_writer.items():
        cps.sort(key=lambda c: (c.seq, c.kind != CheckpointKind.CLOSE))
        bad = next((cp for cp in cps if not cp.valid(public)), None)
        if bad is not None:
            problems.setdefault(writer, Problem(
                "bad_checkpoint", writer, bad.seq, None,
                f"checkpoint {bad.checkpoint_id} has an invalid signature"))
            cps.clear()  # none of the chain's checkpoints is trusted
    terms = {writer: chain_terms(valid) for writer, valid in by_writer.items()}
    keyed = {writer: t.chain for writer, t in terms.items() if t is not None and t.chain in (3, 4)}
    if keyed and chain_key is None:
        raise ConfigError("the audit store holds keyed chains: verify needs the chain key "
                          "(pass --hmac-key, or set audit.hmac_key)")
    key = ChainKey(chain_key) if chain_key is not None else None
    chains: dict[str, list[_Row]] = defaultdict(list)
    for raw in events:
        writer = str(raw[_WRITER])
        chains[writer].append(light(raw, key, chain=keyed.get(writer)))
    notes: list[str] = []
    for writer in sorted(set(chains) | set(by_writer)):
        if writer in problems:
            continue
        rows = chains.get(writer, [])
        valid = by_writer.get(writer, [])
        found = check_chain(writer, rows)
        if found is None:
            found, note = _check_checkpoints(writer, rows, valid)
            if note:
                notes.append(note)
        bounds = terms.get(writer)
        if found is None and bounds is not None:
            found = _check_stretches(writer, rows, valid, bounds)
        if found is None and witnessed.get(writer):
            cp = witnessed[writer][0]
            found = Problem("deleted", writer, cp.seq, None,
                            f"checkpoint {cp.checkpoint_id} ({cp.kind.value}, seq {cp.seq}) is "
                            "in the witness but was deleted from the store")
        if found is not None:
            problems[writer] = found
    ordered = tuple(problems[w] for w in sorted(problems))
    return VerifyReport(sum(map(len, chains.values())), len(set(chains) | set(by_writer)),
                        cp_total, ordered, tuple(notes))

