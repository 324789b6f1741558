"""Segments grown ahead of their records: zeros end a lane for every reader; a torn
record before them is cut; rotation and close cut the zeros off."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard._errors import AuditUnavailableError
from guard.audit._journal import GROW, Journal, JournalReader, read_journal, segments
from tests.guard.audit.conftest import frame


def abandon(journal: Journal) -> None:
    """Leave the journal as a SIGKILL does: nothing cut, nothing closed in order."""
    os.close(journal._fd)
    journal._end.close()
    os.close(journal._lock)


def test_a_batch_grows_the_segment_ahead_and_the_next_ones_do_not_change_its_size(
    tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    journal.append([b"one"])
    [(_, path)] = segments(tmp_path / "j")
    grown = path.stat().st_size
    assert grown == len(frame(b"one")) + GROW  # the zeros were synced with the batch
    journal.append([b"two", b"three"])
    assert path.stat().st_size == grown
    journal.close()  # cut to its records
    assert path.read_bytes() == frame(b"one") + frame(b"two") + frame(b"three")


def test_rotation_cuts_the_closed_segment_to_its_records(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=20)
    for n in range(6):
        journal.append([b"record %d" % n])
    abandon(journal)
    found = segments(tmp_path / "j")
    assert len(found) == 3
    for first, path in found[:-1]:  # two records each, and no zeros
        assert path.read_bytes() == frame(b"record %d" % first) + frame(b"record %d" % (first + 1))
    assert found[-1][1].stat().st_size > GROW
    assert [p for _, p in read_journal(tmp_path / "j")] == [b"record %d" % n for n in range(6)]


def _records(folder: Path) -> list[tuple[int, bytes]]:
    return [r for r in read_journal(folder) if isinstance(r, tuple)]


def test_zeros_end_every_segment_for_the_scan_and_the_reader(tmp_path: Path) -> None:
    """A kill between the next segment's start and the cut leaves zeros in the older one."""
    lane = tmp_path / "j"
    journal = Journal(lane, segment_bytes=40)
    payloads = [b"p%02d" % n * (1 + n % 5) for n in range(12)]
    for start in range(0, 12, 3):
        journal.append(payloads[start:start + 3])
    abandon(journal)
    for _, path in segments(lane):
        with path.open("ab") as handle:
            handle.write(bytes(5000))
    assert list(read_journal(lane)) == list(enumerate(payloads))
    reader = JournalReader(lane, 1, block=16)
    assert reader.read(12, 100) == payloads[1:]
    reader.close()
    journal = Journal(lane, segment_bytes=40)  # recovery cuts the newest one's zeros
    assert journal.next_offset == 12
    assert segments(lane)[-1][1].stat().st_size == sum(map(len, map(frame, payloads[9:])))
    journal.close()


def test_zeros_between_records_are_damage_not_an_end(tmp_path: Path) -> None:
    lane = tmp_path / "j"
    journal = Journal(lane)
    journal.append([b"alpha", b"bravo", b"charlie"])
    journal.close()
    [(_, path)] = segments(lane)
    data = bytearray(path.read_bytes())
    at = len(frame(b"alpha"))
    data[at:at + len(frame(b"bravo"))] = bytes(len(frame(b"bravo")))
    path.write_bytes(bytes(data))
    records = list(read_journal(lane))
    assert records[0] == (0, b"alpha")
    damage = records[1]
    assert not isinstance(damage, tuple)
    assert (damage.offset, damage.why) == (1, "zero length")
    reader = JournalReader(lane, 0)
    assert reader.read(3, 10) == [b"alpha"]
    with pytest.raises(AuditUnavailableError, match="bad frame at offset 1"):
        reader.read(3, 10)
    reader.close()
    with pytest.raises(AuditUnavailableError, match="below the durable end 3"):
        Journal(lane)


def test_a_torn_record_followed_by_zeros_is_cut_and_the_journal_goes_on(tmp_path: Path) -> None:
    lane = tmp_path / "j"
    journal = Journal(lane)
    journal.append([b"one", b"two"])
    size = journal._size
    abandon(journal)
    [(_, path)] = segments(lane)
    with path.open("r+b") as handle:  # killed inside the next write, over the zeros
        handle.seek(size)
        handle.write(frame(b"three") + frame(b"torn record")[:12])
    [*_, last] = read_journal(lane)
    assert not isinstance(last, tuple)
    assert last.why == "incomplete frame"
    journal = Journal(lane)
    assert journal.next_offset == 3  # the whole frame kept, the torn one cut with the zeros
    assert path.stat().st_size == size + len(frame(b"three"))
    journal.append([b"four"])
    journal.close()
    assert [p for _, p in read_journal(lane)] == [b"one", b"two", b"three", b"four"]


PAYLOADS = st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=PAYLOADS, cut=st.integers(min_value=0), zeros=st.integers(0, 3000))
def test_every_truncation_point_before_zeros_recovers_the_whole_records(
    tmp_path: Path, payloads: list[bytes], cut: int, zeros: int
) -> None:
    lane = tmp_path / "h"
    shutil.rmtree(lane, ignore_errors=True)
    journal = Journal(lane)
    journal.append(payloads)
    abandon(journal)
    (lane / "END").unlink()  # nothing acknowledged: the kill came before the sync
    [(_, path)] = segments(lane)
    data = b"".join(frame(p) for p in payloads)
    cut %= len(data) + 1
    left = data[:cut] + bytes(zeros)
    path.write_bytes(left)
    whole, end = 0, 0  # the frames the bytes left still hold (zeros may complete one)
    for payload in payloads:
        if left[end:end + len(frame(payload))] != frame(payload):
            break
        whole, end = whole + 1, end + len(frame(payload))
    assert [p for _, p in _records(lane)] == payloads[:whole]
    journal = Journal(lane)
    assert journal.next_offset == whole
    assert path.stat().st_size == end
    journal.append([b"next"])
    journal.close()
    assert [p for _, p in read_journal(lane)] == [*payloads[:whole], b"next"]
