"""Third review: a journal whose acknowledged tail is gone never takes new events.

Someone with write access to the journal (or a restore of the folder from an
older copy) cuts the newest segment's last records at a frame boundary, or
removes the newest segment: every checksum is still right. The journal's
published durable end (``END``) says those records were acknowledged. A writer
that reopened such a lane would number its next records from where the cut
left off, and the index, which had read up to the old end, would skip every
new record below it: acknowledged events never queryable. The journal refuses
to open instead (the guard does not start on it: fail closed).

``guard audit verify --journal`` says a journal is damaged when acknowledged
records are missing from it: a lane's records are numbered without a gap (an
older segment cut short, or a middle one removed, leaves one; only the oldest
segments may be archived), and reach the durable end the lane published (its
newest records cut off before the index read them).
"""

from __future__ import annotations

import shutil
import sqlite3
import struct
from pathlib import Path

import pytest

from guard._errors import AuditUnavailableError
from guard.audit import JournalTrail
from guard.audit._event import EventKind
from guard.audit._journal import Journal, durable_end, segments
from tests.security.audit_tamper_kit import AuditKeys, cli_verify, make_keys
from tests.security.audit_tamper_kit import trail as kit_trail

FIELDS = {"caller": "svc:crm", "purpose": "relationship.management", "categories": ("contact",),
          "action": "read", "allowed": True, "reason": "allowed", "subject_id": "cust-1"}


def _trail(url: str, keys: AuditKeys, folder: Path, **kwargs: object) -> JournalTrail:
    return kit_trail(url, keys, journal=folder, checkpoint_every=4, **kwargs)


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


def _chains(tmp_path: Path, count: int) -> tuple[str, AuditKeys, Path, list[list[Path]]]:
    """Writers one after the other on one lane, a segment per batch; each chain's segments."""
    keys = make_keys(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    folder = tmp_path / "journal"
    made: list[list[Path]] = []
    for _ in range(count):
        before = {path for _, path in segments(folder / "lane-0")} if made else set()
        with _trail(url, keys, folder, journal_segment_mb=0) as trail:
            for _ in range(10):
                trail.record_fields(EventKind.DECISION, FIELDS)
        made.append([path for _, path in segments(folder / "lane-0") if path not in before])
    return url, keys, folder, made


def _tampered(url: str, keys: AuditKeys, tmp_path: Path, folder: Path, words: str) -> None:
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "TAMPERED" in done.stdout
    assert words in done.stdout, done.stdout


def test_verify_names_records_cut_off_an_older_segment(tmp_path: Path) -> None:
    """The first chain's last records (its closing checkpoint too) cut off its last segment."""
    url, keys, folder, made = _chains(tmp_path, 2)
    last = made[0][-1]
    data = last.read_bytes()
    last.write_bytes(data[:_frame_starts(data)[-1]])
    _tampered(url, keys, tmp_path, folder, "are missing")


def test_verify_names_a_whole_chain_removed_with_its_segments(tmp_path: Path) -> None:
    """The middle one of three chains removed from the journal (the index still holds it)."""
    url, keys, folder, made = _chains(tmp_path, 3)
    for path in made[1]:
        path.unlink()
    _tampered(url, keys, tmp_path, folder, "are missing")


def test_archived_oldest_segments_are_not_damage(tmp_path: Path) -> None:
    """The oldest segments moved away (archived with the store's backups) is no gap."""
    url, keys, folder, made = _chains(tmp_path, 2)
    for path in made[0]:
        path.unlink()
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact" in done.stdout


def test_verify_names_records_cut_off_below_the_durable_end(tmp_path: Path) -> None:
    """The newest records cut off before any index read them (the store holds none)."""
    keys = make_keys(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    folder = tmp_path / "journal"
    with _trail(url, keys, folder, indexed=False) as trail:
        for _ in range(10):
            trail.record_fields(EventKind.DECISION, FIELDS)
        trail.writer.flush(30.0)
    [(_, segment)] = segments(folder / "lane-0")
    data = segment.read_bytes()
    segment.write_bytes(data[:_frame_starts(data)[-4]])
    _tampered(url, keys, tmp_path, folder, "below its durable end 14")


def test_verify_names_an_end_file_that_holds_no_end(tmp_path: Path) -> None:
    """A rewritten END is named in one line (no traceback), as damage."""
    url, keys, folder, _ = _chains(tmp_path, 1)
    (folder / "lane-0" / "END").write_bytes(b"\xff" * 16)
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "does not hold a valid end" in done.stdout


def test_a_lane_restored_from_an_older_copy_loses_no_new_event_from_the_index(
    tmp_path: Path,
) -> None:
    """The index has read further than the lane now holds (a restore, or another lane's ID).

    The lane is whole (its END agrees), so it opens; the index's saved offset is
    past its end, and the indexer used to wait for the journal to grow past it and
    read on from there: every event acknowledged in between never reached the index.
    It reads the lane again from its start instead (the store keeps each event once).
    """
    keys = make_keys(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    folder = tmp_path / "journal"
    lane = folder / "lane-0"
    with _trail(url, keys, folder) as trail:
        for _ in range(10):
            trail.record_fields(EventKind.DECISION, FIELDS)
    copy = tmp_path / "lane-0.copy"
    shutil.copytree(lane, copy)
    with _trail(url, keys, folder) as trail:
        for _ in range(10):
            trail.record_fields(EventKind.DECISION, FIELDS)
    shutil.rmtree(lane)
    shutil.copytree(copy, lane)  # the older copy, END and all
    with _trail(url, keys, folder) as trail:
        acknowledged = [trail.record_fields(EventKind.DECISION, FIELDS) for _ in range(10)]
    with sqlite3.connect(tmp_path / "audit.db") as db:
        indexed = {row[0] for row in db.execute("SELECT event_id FROM audit_event")}
    assert [i for i in acknowledged if i not in indexed] == []
