"""``guard audit verify``: walk every writer's hash chain and check its signed checkpoints."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard.audit._checkpoint import Checkpoint, CheckpointKind
from guard.audit._event import FIELD_NAMES, GENESIS_HASH, compute_hash, legacy_hash
from guard.audit._schema import (
    CHECKPOINT_COLUMNS,
    EVENT_COLUMNS,
    event_row,
    row_checkpoint,
    row_event,
)
from guard.audit._store import Store


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong in one writer's chain.

    ``kind`` is ``altered``, ``deleted``, ``inserted``, ``reordered``, ``truncated``
    or ``bad_checkpoint``; ``event_id`` names the first bad event (or, for a
    truncated tail or deletion, the event right before or after the gap).
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
class VerifyReport:
    """What verify found."""

    events: int
    writers: int
    checkpoints: int
    problems: tuple[Problem, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


class _Row(NamedTuple):
    seq: int
    event_id: str
    prev: str
    hash: str
    ok: bool


def _check_chain(writer: str, rows: list[_Row]) -> Problem | None:
    """The first break in a chain (rows sorted by seq), or None."""
    by_hash = {r.hash: i for i, r in enumerate(rows)}
    exp_seq, exp_prev = 1, GENESIS_HASH
    for i, r in enumerate(rows):
        if r.seq == exp_seq and r.ok and r.prev == exp_prev:
            exp_seq, exp_prev = exp_seq + 1, r.hash
            continue

        def problem(kind: str, row: _Row, message: str) -> Problem:
            return Problem(kind, writer, row.seq, row.event_id, message)

        if r.seq < exp_seq:
            return problem("inserted", r, f"a second event claims seq {r.seq}")
        if r.prev == exp_prev:
            return problem("altered", r, "its hash does not match its content")
        if r.prev == GENESIS_HASH:
            return problem("inserted", r, "a second chain start inside the chain")
        pred = by_hash.get(r.prev)
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
    writer: str, rows: list[_Row], cps: list[Checkpoint], public: Ed25519PublicKey
) -> tuple[Problem | None, str | None]:
    """Problems the signed checkpoints reveal in an otherwise linked chain, and a note."""
    valid: list[Checkpoint] = []
    for cp in sorted(cps, key=lambda c: (c.seq, c.kind != CheckpointKind.CLOSE)):
        if not cp.valid(public):
            return Problem("bad_checkpoint", writer, cp.seq, None,
                           f"checkpoint {cp.checkpoint_id} has an invalid signature"), None
        valid.append(cp)
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


_EVENTS_SQL = f"SELECT {EVENT_COLUMNS} FROM audit_event ORDER BY writer_id, seq, event_id"  # noqa: S608
_CHECKPOINTS_SQL = f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoint"  # noqa: S608
_SEQ, _WRITER = FIELD_NAMES.index("seq"), FIELD_NAMES.index("writer_id")
_PREV, _HASH = FIELD_NAMES.index("prev_hash"), FIELD_NAMES.index("hash")


def _light(raw: tuple[Any, ...]) -> tuple[str, _Row]:
    """A stored row's chain position, and whether it is exactly what the guard wrote.

    A row is intact when its hash matches its content and chain fields (format 2,
    or format 1 for events written before it) *and* re-encoding the event
    gives the stored values back (so ``allowed = 2`` or re-spaced JSON is caught).
    A row that cannot even be read is not intact.
    """
    try:
        event = row_event(raw)
        ok = (event_row(event) == tuple(raw)
              and event.hash in (compute_hash(event), legacy_hash(event)))
    except (ValueError, TypeError, KeyError, IndexError):
        ok = False
    try:
        seq = int(raw[_SEQ])
    except (ValueError, TypeError):
        seq = -1
    return str(raw[_WRITER]), _Row(seq, str(raw[0]), str(raw[_PREV]), str(raw[_HASH]), ok)


def verify(store: Store, public: Ed25519PublicKey) -> VerifyReport:
    """Check every chain and checkpoint in ``store`` against ``public``."""
    chains: dict[str, list[_Row]] = defaultdict(list)
    total = 0
    for raw in store.stream(_EVENTS_SQL):
        writer, row = _light(raw)
        chains[writer].append(row)
        total += 1
    checkpoints: dict[str, list[Checkpoint]] = defaultdict(list)
    cp_total = 0
    for raw in store.stream(_CHECKPOINTS_SQL):
        cp = row_checkpoint(raw)
        checkpoints[cp.writer_id].append(cp)
        cp_total += 1
    problems: list[Problem] = []
    notes: list[str] = []
    for writer in sorted(set(chains) | set(checkpoints)):
        rows = chains.get(writer, [])
        found = _check_chain(writer, rows)
        if found is None:
            found, note = _check_checkpoints(writer, rows, checkpoints.get(writer, []), public)
            if note:
                notes.append(note)
        if found is not None:
            problems.append(found)
    return VerifyReport(total, len(set(chains) | set(checkpoints)), cp_total, tuple(problems),
                        tuple(notes))
