"""Verify a journal, and the index built from it: which one disagrees, and where.

The journal's chains are checked exactly as a store's are: its records go
through :func:`guard.audit._verify.verify_chains`, each chain's by ``seq``.
Then every journal event the index has read (below its saved offset) must be
in the index with the same columns, and the index must hold no other event of
the journal's chains. A lane's records are numbered without a gap and reach
the durable end it published: a gap, or an end below it, is damage
(acknowledged records were removed; only the oldest segments may be archived),
as is a lane the indexer once found holding fewer records than it had read
(its note in the store: a lane replaced by an older copy, re-read since).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from guard._errors import AuditUnavailableError
from guard.audit._checkpoint import Checkpoint
from guard.audit._event import FIELD_NAMES
from guard.audit._fields import decode_many
from guard.audit._indexer import SHORTENED
from guard.audit._journal import Damage, durable_end, journal_id, lanes, read_journal
from guard.audit._schema import EVENT_COLUMNS, Row
from guard.audit._store import Store, indexed_offset
from guard.audit._verify import Problem, VerifyReport, seq_of, verify_chains

_WRITER = FIELD_NAMES.index("writer_id")


@dataclass(frozen=True, slots=True)
class JournalReport:
    """What the journal check found: the journal's own chains, then the index against it."""

    journal: VerifyReport
    index: tuple[Problem, ...]
    damage: tuple[str, ...]
    lanes: int

    @property
    def ok(self) -> bool:
        """True when the journal is intact and the index agrees with it."""
        return self.journal.ok and not self.index and not self.damage


def _records(lane: Path, damage: list[str]) -> Iterator[tuple[int, Row | Checkpoint]]:
    try:  # before reading: every record below it must be there
        published = durable_end(lane)
    except AuditUnavailableError as exc:
        damage.append(str(exc))
        published = 0
    records = list(read_journal(lane))
    expected: int | None = None  # numbered without a gap (the oldest may be archived)
    for number, record in enumerate(records):
        if isinstance(record, Damage):
            expected = None
            last = number == len(records) - 1 and record.why.startswith("incomplete")
            if not last:  # an incomplete last frame is a write in progress
                damage.append(f"{record.path.name} at byte {record.position} (offset "
                              f"{record.offset}): {record.why}")
            elif record.offset < published:  # ... unless it was acknowledged
                damage.append(f"{lane.name}: record {record.offset} is cut short below its "
                              f"durable end {published}")
            continue
        offset, payload = record
        if expected is not None and offset != expected:
            damage.append(f"{lane.name}: records {expected} to {offset - 1} are missing")
        expected = offset + 1
        try:
            values, checkpoints = decode_many([payload])
        except ValueError:
            damage.append(f"{lane.name} offset {offset}: not an audit record")
        else:
            yield offset, checkpoints[0] if checkpoints else tuple(values)
    if not records:
        expected = 0
    if expected is not None and expected < published:  # after a bad frame: named above
        damage.append(f"{lane.name}: its records end at {expected}, below its durable end "
                      f"{published} (records were cut off)")


def verify_journal(store: Store, folder: Path, public: Ed25519PublicKey, *,
                   chain_key: bytes | None = None) -> JournalReport:
    """Check the journal(s) under ``folder`` and the index ``store`` built from them.

    An event or checkpoint id that recurs in the journal counts once (its first
    record), as in a store. ``folder`` is ``audit.journal`` or one lane of it.
    """
    damage: list[str] = []
    disagree: list[Problem] = []
    events: dict[str, Row] = {}
    checkpoints: dict[str, Checkpoint] = {}
    found = lanes(folder)
    for lane in found:
        key = journal_id(lane)
        indexed = indexed_offset(store, key)
        shortened = indexed_offset(store, key + SHORTENED)
        if shortened:
            damage.append(f"{lane.name}: the index had read {shortened} record(s) of it when "
                          "it was found holding fewer (replaced by an older copy, or cut) and "
                          "read again from its start: the journal lacks what was written "
                          "after the copy (the index and the witness keep it)")
        read: dict[str, dict[str, Row]] = {}
        end = 0
        for offset, record in _records(lane, damage):
            end = offset + 1
            if isinstance(record, Checkpoint):
                checkpoints.setdefault(record.checkpoint_id, record)
                continue
            events.setdefault(str(record[0]), record)
            if offset < indexed:
                read.setdefault(str(record[_WRITER]), {})[str(record[0])] = record
        disagree += _compare(store, read)
        if indexed > end:
            damage.append(f"{lane.name}: the index has read {indexed} record(s), the "
                          f"journal holds {end} (records were cut off its end)")
    ordered = sorted(events.values(), key=lambda r: (str(r[_WRITER]), seq_of(r), str(r[0])))
    report = verify_chains(ordered, checkpoints.values(), public, chain_key=chain_key)
    return JournalReport(report, tuple(disagree), tuple(damage), len(found))


def _compare(store: Store, read: dict[str, dict[str, Row]]) -> list[Problem]:
    """The first disagreement of each chain between the journal (``read``) and the index."""
    problems = []
    for writer, journal_rows in read.items():
        indexed = {str(r[0]): tuple(r) for r in store.stream(
            f"SELECT {EVENT_COLUMNS} FROM audit_event WHERE writer_id = ? ORDER BY seq",  # noqa: S608
            (writer,))}
        for event_id, row in sorted(journal_rows.items(), key=lambda kv: seq_of(kv[1])):
            held = indexed.pop(event_id, None)
            if held is None:
                problems.append(Problem("deleted", writer, seq_of(row), event_id,
                                        "the journal holds this event; the index does not"))
                break
            if held != row:
                problems.append(Problem("altered", writer, seq_of(row), event_id,
                                        "the index differs from the journal"))
                break
        else:
            last = max(seq_of(row) for row in journal_rows.values())
            extra = [r for r in indexed.values() if seq_of(r) <= last]
            if extra:
                first = min(extra, key=seq_of)
                problems.append(Problem("inserted", writer, seq_of(first), str(first[0]),
                                        "the index holds an event the journal does not"))
    return problems
