"""A full audit disk: the zeros grown ahead of the records never refuse a batch.

The journal lives on a real 8 MB tmpfs mounted for the test; a filler file leaves
one page, which the batch's records take to the byte, so the 1 MiB of zeros a
batch writes ahead of its records finds no room at all: the batch is still synced
and acknowledged, and read back whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from opskit import fill_disk, free_bytes

from guard.audit._journal import Journal, read_journal, segments
from tests.guard.audit.conftest import frame


def test_a_batch_with_no_room_left_for_the_zeros_ahead_is_still_durable(
    small_disk: Path
) -> None:
    lane = small_disk / "lane-0"
    journal = Journal(lane)
    page = os.statvfs(small_disk).f_frsize
    fill_disk(small_disk, page)
    assert free_bytes(small_disk) == page
    record = b"[" + b"x" * (page - len(frame(b"")) - 2) + b"]"  # its frame is one page
    assert journal.append([record]) == 0
    [(_, path)] = segments(lane)
    assert path.stat().st_size == page
    journal.close()
    assert [p for _, p in read_journal(lane)] == [record]
