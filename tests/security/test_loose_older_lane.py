"""A lane replaced by an older copy of itself is named by ``guard audit verify --journal``.

The copy is whole (its ``END`` agrees with its records), so it opens and its
records number without a gap; the index, which had read further, reads it again
from its start and keeps every event. Before, nothing was left to tell that the
journal had lost the records written after the copy: verify found journal and
index in agreement. The indexer now notes in the store how far it had read the
lane before it found it shorter, and verify names that lane as damage (exit 1),
after any number of later writers. Real SQLite, the real journal, the real CLI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from guard.audit import JournalTrail
from guard.audit._event import EventKind
from tests.security.audit_tamper_kit import AuditKeys, cli_verify, make_keys
from tests.security.audit_tamper_kit import trail as kit_trail

FIELDS = {"caller": "svc:crm", "purpose": "relationship.management", "categories": ("contact",),
          "action": "read", "allowed": True, "reason": "allowed", "subject_id": "cust-1"}


def _trail(url: str, keys: AuditKeys, folder: Path) -> JournalTrail:
    return kit_trail(url, keys, journal=folder, checkpoint_every=4)


def _write(url: str, keys: AuditKeys, folder: Path, events: int = 10) -> None:
    with _trail(url, keys, folder) as trail:
        for _ in range(events):
            trail.record_fields(EventKind.DECISION, FIELDS)


def test_a_lane_replaced_by_an_older_copy_is_named_after_its_reindex(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    folder = tmp_path / "journal"
    lane = folder / "lane-0"
    _write(url, keys, folder)
    copy = tmp_path / "lane-0.copy"
    shutil.copytree(lane, copy)
    _write(url, keys, folder)  # indexed: the index has read past the copy's end
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    shutil.rmtree(lane)
    shutil.copytree(copy, lane)  # the older copy, END and all
    _write(url, keys, folder)  # the index reads the lane again from its start
    _write(url, keys, folder)  # and later writers go on in it
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "journal: damaged: lane-0: the index had read" in done.stdout
    assert "older copy" in done.stdout


def test_a_lane_that_only_grew_is_intact(tmp_path: Path) -> None:
    """Writers one after another in one lane, each indexed: no note, verify intact."""
    keys = make_keys(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    folder = tmp_path / "journal"
    for _ in range(3):
        _write(url, keys, folder)
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact" in done.stdout
