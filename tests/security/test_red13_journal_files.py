"""Thirteenth review: a journal file replaced by a folder, a pipe or a link is damage, said.

A writer to the journal folder can put something else where a segment or the ``END``
file is. ``guard audit verify`` read segments with ``Path.read_bytes`` and ``END`` with
``os.pread``: a folder stopped it with ``IsADirectoryError``'s traceback, a named pipe
made it wait for ever (and the index, reading the lane, with it), and a link to
``/dev/zero`` made it read without end. Each is now damage of the journal, named with
its file (``journal: damaged: ...``), TAMPERED, exit 1; the index's reader refuses them
the same way.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from guard._errors import ConfigError
from guard.audit._journal import JournalReader, segment_name, segments
from tests.security.audit_tamper_kit import GUARD, AuditKeys
from tests.security.test_audit_tamper_journal import recorded


def _verify(url: str, keys: AuditKeys, tmp_path: Path, folder: Path
            ) -> subprocess.CompletedProcess[str]:
    """``guard audit verify --journal`` as an auditor runs it; a generous bound on a wait."""
    config = tmp_path / "empty-guard.toml"
    config.write_text("")
    return subprocess.run(
        [*GUARD, "audit", "verify", "--store", url, "--public-key", str(keys.public),
         "--hmac-key", str(keys.hmac), "--journal", str(folder)],
        capture_output=True, text=True, check=False, cwd=tmp_path, timeout=120,
        env={"GUARD_CONFIG": str(config), "PATH": "/usr/bin:/bin",
             "PYTHONPATH": str(Path(__file__).resolve().parents[2])})


def _planted(folder: Path, what: str) -> Path:
    lane = folder / "lane-0" if (folder / "lane-0").is_dir() else folder
    first = segments(lane)[-1][0]
    name = "END" if what.startswith("end") else segment_name(first + 1000)
    path = lane / name
    if name == "END":
        path.unlink()
    if what.endswith("folder"):
        path.mkdir()
    elif what.endswith("pipe"):
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize("what", ["segment folder", "segment pipe", "segment link",
                                  "end folder", "end pipe"])
def test_a_journal_file_of_another_kind_is_named_damage(tmp_path: Path, what: str) -> None:
    url, folder, keys, _ids = recorded(tmp_path)
    planted = _planted(folder, what)
    try:
        done = _verify(url, keys, tmp_path, folder)
    except subprocess.TimeoutExpired:  # the failure before the change
        pytest.fail(f"verify waited on the {what}")
    # Before: a traceback (folder), a wait for ever (pipe), a read without end (link).
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"journal: damaged: {planted.name}" in done.stdout or (
        f"journal: damaged: audit journal {planted.parent}: END cannot be read" in done.stdout)
    assert "TAMPERED" in done.stdout


@pytest.mark.parametrize("what", ["segment folder", "segment pipe", "segment link"])
def test_the_index_reader_refuses_a_segment_of_another_kind(tmp_path: Path, what: str) -> None:
    _url, folder, _keys, _ids = recorded(tmp_path)
    planted = _planted(folder, what)
    lane = planted.parent
    with pytest.raises(ConfigError, match=r"regular file|symbolic link"):
        JournalReader(lane, int(planted.name.removesuffix(".seg")))
