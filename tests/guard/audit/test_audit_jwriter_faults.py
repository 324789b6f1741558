"""The journal writer's unexpected failures: logged with their traceback, failed closed."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from guard._errors import AuditUnavailableError
from guard.audit import EventKind
from guard.audit._checkpoint import CheckpointKind, Terms, sign_checkpoint
from guard.audit._jtrail import JournalTrail
from guard.audit._keys import load_signing_key
from tests.guard.audit.conftest import Keys, trail_settings


def test_a_batch_that_fails_unexpectedly_is_logged_with_its_cause_and_denied(
        keys: Keys, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A countersign no journal record can hold (a sequence past 64 bits) fails its batch.

    Not an append the journal refused (those reach the failure log), so the writer itself
    must say why, at error level with the traceback; the batch's event is denied and the
    writer goes on.
    """
    trail = JournalTrail(trail_settings(f"sqlite:///{tmp_path / 'audit.db'}", keys))
    try:
        trail.record_fields(EventKind.HEARTBEAT, {"detail": "before"})
        odd = dataclasses.replace(
            sign_checkpoint(load_signing_key(keys.signing), checkpoint_id="cp", writer_id="w",
                            seq=1, hash_="0" * 64, ts="2026-11-30T00:00:00.000000Z",
                            kind=CheckpointKind.COUNTERSIGN, terms=Terms(4, 1000, 60.0)),
            seq=2**70)
        with caplog.at_level(logging.DEBUG, logger="guard.audit"), \
                pytest.raises(AuditUnavailableError):
            trail.writer.countersign([odd], timeout=10.0)
        failed = [r for r in caplog.records  # (the folder's name holds "batch" too)
                  if r.name == "guard.audit" and r.getMessage().startswith("audit journal batch")]
        assert failed, caplog.text
        assert all(r.levelno == logging.ERROR for r in failed)
        assert failed[0].exc_info is not None
        assert isinstance(failed[0].exc_info[1], TypeError)
        assert trail.record_fields(EventKind.HEARTBEAT, {"detail": "after"})  # still writing
    finally:
        trail.close()
