"""Third review: a journal whose acknowledged tail is gone never takes new events.

Someone with write access to the journal (or a restore of the folder from an
older copy) cuts the newest segment's last records at a frame boundary, or
removes the newest segment: every checksum is still right. The journal's
published durable end (``END``) says those records were acknowledged. A writer
that reopened such a lane would number its next records from where the cut
left off, and the index, which had read up to the old end, would skip every
new record below it: acknowledged events never queryable. The journal refuses
to open instead (the guard does not start on it: fail closed).
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import pytest

from guard._errors import AuditUnavailableError
from guard.audit import JournalTrail, load_hmac_key, load_signing_key, open_store
from guard.audit._event import EventKind
from guard.audit._journal import Journal, durable_end, segments
from tests.security.audit_tamper_kit import AuditKeys, make_keys

FIELDS = {"caller": "svc:crm", "purpose": "relationship.management", "categories": ("contact",),
          "action": "read", "allowed": True, "reason": "allowed", "subject_id": "cust-1"}


def _trail(url: str, keys: AuditKeys, folder: Path) -> JournalTrail:
    return JournalTrail(open_store(url), load_signing_key(keys.signing),
                        hmac_key=load_hmac_key(keys.hmac), journal=folder, checkpoint_every=4)


def _frame_starts(data: bytes) -> list[int]:
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        pos += 8 + struct.unpack_from("<II", data, pos)[0]
    return starts


def test_a_journal_cut_at_a_frame_boundary_below_its_durable_end_does_not_open(
    tmp_path: Path,
) -> None:
    lane = tmp_path / "lane-0"
    journal = Journal(lane)
    for n in range(10):
        journal.append([b'{"n":%d}' % n])
    journal.close()
    [(_, segment)] = segments(lane)
    whole = segment.read_bytes()
    cut = whole[:_frame_starts(whole)[7]]  # records 7, 8, 9 gone; every checksum right
    segment.write_bytes(cut)
    with pytest.raises(AuditUnavailableError, match="durable end 10"):
        Journal(lane)
    assert segment.read_bytes() == cut  # kept as found, for inspection
    assert durable_end(lane) == 10  # the end is not moved back


def test_a_journal_whose_newest_segment_is_gone_does_not_open(tmp_path: Path) -> None:
    lane = tmp_path / "lane-0"
    journal = Journal(lane, segment_bytes=64)
    for n in range(10):
        journal.append([b'{"n":%d,"pad":"%s"}' % (n, b"x" * 40)])
    journal.close()
    found = segments(lane)
    assert len(found) > 1
    found[-1][1].unlink()
    with pytest.raises(AuditUnavailableError, match="durable end 10"):
        Journal(lane)
    assert durable_end(lane) == 10


def test_no_event_acknowledged_after_a_cut_tail_is_missing_from_the_index(
    tmp_path: Path,
) -> None:
    """End to end: the trail that would have lost events from the index never opens."""
    keys = make_keys(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    folder = tmp_path / "journal"
    with _trail(url, keys, folder) as trail:
        for _ in range(10):
            trail.record_fields(EventKind.DECISION, FIELDS)
    [(_, segment)] = segments(folder / "lane-0")
    whole = segment.read_bytes()
    segment.write_bytes(whole[:_frame_starts(whole)[-4]])  # the chain's last 4 records
    acknowledged: list[str] = []
    try:
        with _trail(url, keys, folder) as trail:
            acknowledged = [trail.record_fields(EventKind.DECISION, FIELDS) for _ in range(10)]
    except AuditUnavailableError:
        pass  # refused to open: nothing acknowledged, nothing lost
    with sqlite3.connect(tmp_path / "audit.db") as db:
        indexed = {row[0] for row in db.execute("SELECT event_id FROM audit_event")}
    assert [i for i in acknowledged if i not in indexed] == []
