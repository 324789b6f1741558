"""The journal writer's failures around an append and at close: no sequence used twice, no
write of a writer left behind lands in another file."""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import time
from pathlib import Path
from typing import Any

import pytest

from guard._errors import AuditUnavailableError
from guard.audit import EventKind, load_public_key, load_signing_key, open_store
from guard.audit._fields import ChainKey
from guard.audit._journal import END, Journal, read_journal
from guard.audit._jtrail import JournalTrail
from guard.audit._jverify import verify_journal
from guard.audit._jwriter import JournalWriter
from tests.guard.audit.conftest import CHAIN_KEY, HMAC_KEY, Keys, full_pipe, trail_settings

FIELDS: dict[str, Any] = {"caller": "svc:crm", "purpose": "billing", "action": "read",
                          "allowed": True, "reason": "allowed", "subject_id": "customer-1"}


def test_an_append_that_fails_after_its_sync_uses_no_sequence_twice(
        keys: Keys, tmp_path: Path) -> None:
    """The journal's mapping closed under a running writer (what a close does): the batch's
    records are synced, then the durable end's update raises (not a refusal). The producer
    is denied, the records keep their sequences, and the next event follows them."""
    folder = tmp_path / "j"
    journal = Journal(folder)
    w = JournalWriter(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(keys.signing),
                      writer_id="test", chain_key=ChainKey(CHAIN_KEY))
    try:
        first = w.submit(EventKind.DECISION, FIELDS)
        journal._end.close()  # the next append syncs its records, then cannot publish them
        with pytest.raises(AuditUnavailableError):
            w.submit(EventKind.DECISION, FIELDS, timeout=10.0)
        fd = os.open(folder / END, os.O_RDWR)
        journal._end = mmap.mmap(fd, 16)
        os.close(fd)
        last = w.submit(EventKind.DECISION, FIELDS, timeout=10.0)
    finally:
        w.close()
        journal.close()
    rows = [json.loads(record) for _, record in read_journal(folder)]
    seqs = [row[24] for row in rows if isinstance(row, list)]  # the events' sequences
    assert seqs == [1, 2, 3]  # the denied event is in the journal: synced, never acknowledged
    store = open_store(f"sqlite:///{tmp_path / 'index.db'}")
    try:
        report = verify_journal(store, folder, load_public_key(keys.public), chain_key=CHAIN_KEY)
    finally:
        store.close()
    assert report.journal.ok, report.journal.problems
    assert report.journal.events == 3
    assert first != last


def test_close_leaves_a_hung_writer_its_descriptor_and_refuses_what_it_writes_next(
        keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A writer blocked in an append that does not return (a pipe with a full buffer in
    place of the segment) outlives close's bound. Close says so and returns; the segment's
    descriptor stays open, so files opened afterwards get other numbers, and when the
    writer comes back, the journal refuses its next append (the chain's closing
    checkpoint): nothing lands in those files."""
    trail = JournalTrail(trail_settings(f"sqlite:///{tmp_path / 'audit.db'}", keys))
    journal = trail.journal
    trail.record_fields(EventKind.HEARTBEAT, {"detail": "opens the chain"})
    read, write = full_pipe()
    segment = journal._fd
    good = os.dup(segment)
    os.dup2(write, segment)  # the next append blocks in its write
    others: list[int] = []
    try:
        trail.post_fields(EventKind.HEARTBEAT, {"detail": "hangs"})
        deadline = time.monotonic() + 30
        while trail.writer._inflight is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert trail.writer._inflight is not None
        with caplog.at_level(logging.ERROR, logger="guard.audit"):
            trail.close(timeout=0.3)
        assert trail.writer.alive  # still blocked in its write
        others = [os.open(tmp_path / f"opened-later-{n}", os.O_RDWR | os.O_CREAT, 0o600)
                  for n in range(8)]
        os.close(read)  # the blocked write ends (EPIPE); the writer then closes its chain
        trail.writer._thread.join(10)
        assert not trail.writer.alive
        assert [os.fstat(fd).st_size for fd in others] == [0] * 8  # nothing landed there
        assert segment not in others  # the segment's number was never free
        assert os.fstat(segment).st_ino == os.fstat(write).st_ino
        said = [r for r in caplog.records if "did not stop within" in r.getMessage()]
        assert said, caplog.text
        with pytest.raises(AuditUnavailableError, match="closed"):
            journal.append([b"{}"])
    finally:
        for fd in others:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.close(read)
        os.dup2(good, segment)
        os.close(good)
        os.close(write)
        with contextlib.suppress(OSError, ValueError):  # closed by the trail if not left open
            journal.close()
