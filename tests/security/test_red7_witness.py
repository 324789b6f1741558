"""Seventh review: a planted line of any length never fills the auditor's memory.

``guard audit verify --witness FILE`` read the witness a line at a time with no bound
on a line: whoever can append to the witness (the guard's user, a log shipper, anyone
the append-only file lets write) put one line of a gigabyte in it, and the auditor's
verify held it whole, or was killed for it, instead of reporting the store. A line is
now read up to a bound far above a checkpoint's size; a longer one is a bad line (its
number reported, the rest of it skipped unread into memory), and the lines after it
are read as before.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from guard.audit._witness import MAX_WITNESS_LINE, read_witness
from tests.security.audit_tamper_kit import GUARD, AuditKeys, make_keys, record

SUBJECTS = [f"subject-{i}" for i in range(6)]
MB = 1 << 20
HUGE = 512 * MB


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path)


def _witness_with_a_huge_line(tmp_path: Path, keys: AuditKeys) -> tuple[str, Path, int]:
    """A store and its witness, with a 512 MB line (a hole: no disk used) planted in the
    middle; the store's URL, the witness and the number of the planted line."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    witness = tmp_path / "witness.jsonl"
    record(url, keys, SUBJECTS, checkpoint_every=2, witness=witness)
    lines = witness.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    with witness.open("wb") as out:
        out.writelines(lines[:1])
        out.seek(out.tell() + HUGE)  # zeros, no newline among them
        out.write(b"\n")
        out.writelines(lines[1:])
    return url, witness, 2


def test_a_huge_witness_line_is_a_bad_line_and_the_rest_is_read(
    tmp_path: Path, audit_keys: AuditKeys
) -> None:
    _, witness, planted = _witness_with_a_huge_line(tmp_path, audit_keys)
    whole = read_witness(witness)
    assert whole.bad_lines == (planted,)
    assert len(whole.checkpoints) >= 3  # every line before and after it


def test_a_line_just_past_the_bound_takes_no_line_after_it(
    tmp_path: Path, audit_keys: AuditKeys
) -> None:
    """A line one byte over the bound, newline included, is bad alone: the checkpoint after
    it is read (skipping "the rest" of a line that had none would eat the next one)."""
    witness = tmp_path / "witness.jsonl"
    record(f"sqlite:///{tmp_path / 'audit.db'}", audit_keys, SUBJECTS, checkpoint_every=2,
           witness=witness)
    lines = witness.read_bytes().splitlines(keepends=True)
    planted = b"x" * MAX_WITNESS_LINE + b"\n"
    witness.write_bytes(b"".join([lines[0], planted, *lines[1:]]))
    read = read_witness(witness)
    assert read.bad_lines == (2,)
    assert len(read.checkpoints) == len(lines)


def test_verify_with_a_huge_witness_line_keeps_its_memory_and_names_the_line(
    tmp_path: Path, audit_keys: AuditKeys
) -> None:
    url, witness, planted = _witness_with_a_huge_line(tmp_path, audit_keys)
    config = tmp_path / "empty-guard.toml"
    config.write_text("")
    out_file, err_file = tmp_path / "verify.out", tmp_path / "verify.err"
    with out_file.open("wb") as out, err_file.open("wb") as err:
        verify = subprocess.Popen(
            [*GUARD, "audit", "verify", "--store", url, "--public-key", str(audit_keys.public),
             "--hmac-key", str(audit_keys.hmac), "--witness", str(witness)],
            stdout=out, stderr=err, cwd=tmp_path,
            env={"GUARD_CONFIG": str(config), "PATH": "/usr/bin:/bin"})
        peak = 0
        while verify.poll() is None:  # the auditor's process's own peak, as it runs
            peak = max(peak, _high_water(verify.pid))
            time.sleep(0.005)
    printed, complained = out_file.read_bytes(), err_file.read_bytes()
    # Reading the line whole held 512 MB (and more to parse it) in the auditor's process.
    assert peak < 256 * MB, f"verify peaked at {peak // MB} MB"
    assert verify.returncode == 1, (printed, complained)
    assert f"witness line(s) {planted} are not checkpoints".encode() in printed
    assert b"Traceback" not in complained


def _high_water(pid: int) -> int:
    """The most memory process ``pid`` has held since it started its program (VmHWM), bytes.

    Its own, unlike ``ru_maxrss``, which a child inherits from the process it forked from.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # it has just ended
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def test_the_bound_is_far_above_a_checkpoints_line(tmp_path: Path, audit_keys: AuditKeys) -> None:
    from guard.audit._witness import MAX_WITNESS_LINE

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    witness = tmp_path / "witness.jsonl"
    record(url, audit_keys, SUBJECTS, checkpoint_every=2, witness=witness)
    longest = max(len(line) for line in witness.read_bytes().splitlines())
    assert longest * 16 < MAX_WITNESS_LINE
