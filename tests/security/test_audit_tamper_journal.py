"""Tampering with the journal or with the index built from it: verify says which one, and where.

The attacker can rewrite journal frames (checksums are not secrets: a forged
frame carries a correct CRC) or run any SQL on the index, but holds neither the
signing key nor the chain key.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import orjson
from crc32c import crc32c

from guard.audit import load_hmac_key, load_public_key, open_store
from guard.audit._event import EventKind
from guard.audit._journal import segments
from guard.audit._jverify import JournalReport, verify_journal
from guard.audit._keys import derive_chain_key
from tests.security.audit_tamper_kit import AuditKeys, cli_verify, make_keys, sql
from tests.security.audit_tamper_kit import trail as kit_trail

FIELDS = {"caller": "svc:crm", "purpose": "relationship.management", "categories": ("contact",),
          "action": "read", "allowed": True, "reason": "allowed", "subject_id": "cust-1"}


def recorded(tmp_path: Path) -> tuple[str, Path, AuditKeys, list[str]]:
    keys = make_keys(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    folder = tmp_path / "journal"
    trail = kit_trail(url, keys, journal=folder, checkpoint_every=4)
    ids = [trail.record_fields(EventKind.DECISION, FIELDS) for _ in range(10)]
    trail.close()
    return url, folder, keys, ids


def check(url: str, folder: Path, keys: AuditKeys) -> JournalReport:
    store = open_store(url, create=False)
    try:
        return verify_journal(store, folder, load_public_key(keys.public),
                              chain_key=derive_chain_key(load_hmac_key(keys.hmac)))
    finally:
        store.close()


def rewrite_frame(folder: Path, event_id: str, old: bytes, new: bytes) -> None:
    """Edit one journal record in place and give its frame a correct checksum."""
    [(_, path)] = segments(folder / "lane-0")
    data = bytearray(path.read_bytes())
    pos = 0
    while pos < len(data):
        length, _crc = struct.unpack_from("<II", data, pos)
        payload = bytes(data[pos + 8:pos + 8 + length])
        if event_id.encode() in payload:
            edited = payload.replace(old, new, 1)
            assert edited != payload
            assert len(edited) == len(payload)
            data[pos:pos + 8 + length] = struct.pack("<II", length, crc32c(edited)) + edited
            path.write_bytes(bytes(data))
            return
        pos += 8 + length
    raise AssertionError("record not found")


def test_an_untouched_journal_and_index_verify(tmp_path: Path) -> None:
    url, folder, keys, _ = recorded(tmp_path)
    report = check(url, folder, keys)
    assert report.ok, (report.journal.problems, report.index, report.damage)
    assert report.journal.events == 10
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact" in done.stdout


def test_an_edited_index_row_is_blamed_on_the_index(tmp_path: Path) -> None:
    url, folder, keys, ids = recorded(tmp_path)
    sql(url, "UPDATE audit_event SET allowed = 0 WHERE event_id = ?", (ids[3],))
    report = check(url, folder, keys)
    assert report.journal.ok  # the journal is intact ...
    [problem] = report.index  # ... and the index disagrees with it at the edited event
    assert (problem.kind, problem.event_id) == ("altered", ids[3])
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 1
    assert f"index disagrees with the journal: altered: event {ids[3]}" in done.stdout


def test_a_deleted_index_row_is_blamed_on_the_index(tmp_path: Path) -> None:
    url, folder, keys, ids = recorded(tmp_path)
    sql(url, "DELETE FROM audit_event WHERE event_id = ?", (ids[5],))
    report = check(url, folder, keys)
    assert report.journal.ok
    assert [(p.kind, p.event_id) for p in report.index] == [("deleted", ids[5])]


def test_a_forged_journal_frame_is_blamed_on_the_journal(tmp_path: Path) -> None:
    url, folder, keys, ids = recorded(tmp_path)
    rewrite_frame(folder, ids[6], b'"read",1,"allowed"', b'"read",0,"allowed"')
    report = check(url, folder, keys)
    assert not report.damage  # the checksum is right: only the chain tells
    [problem] = report.journal.problems
    assert (problem.kind, problem.event_id) == ("altered", ids[6])
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 1
    assert f"journal: altered: event {ids[6]}" in done.stdout


def test_a_damaged_frame_is_reported(tmp_path: Path) -> None:
    url, folder, keys, _ = recorded(tmp_path)
    [(_, path)] = segments(folder / "lane-0")
    data = bytearray(path.read_bytes())
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    report = check(url, folder, keys)
    assert report.damage
    assert not report.ok


def test_records_cut_off_the_journals_end_are_reported(tmp_path: Path) -> None:
    """Whole frames removed from the end: every checksum holds, the index has read past it."""
    url, folder, keys, _ = recorded(tmp_path)
    [(_, path)] = segments(folder / "lane-0")
    data = path.read_bytes()
    ends, pos = [], 0
    while pos < len(data):
        pos += 8 + struct.unpack_from("<II", data, pos)[0]
        ends.append(pos)
    path.write_bytes(data[:ends[-4]])  # the last three records are gone
    report = check(url, folder, keys)
    assert [line for line in report.damage if "cut off its end" in line] == [
        f"lane-0: the index has read {len(ends)} record(s), the journal holds "
        f"{len(ends) - 3} (records were cut off its end)"]
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 1
    assert "journal: damaged: lane-0: the index has read" in done.stdout


def add_frame(folder: Path, event_id: str, payload_of: Callable[[bytes], bytes]) -> None:
    """Append a forged frame (correct checksum) made from the record of ``event_id``.

    Args:
        folder: The journal folder.
        event_id: The record copied.
        payload_of: Makes the forged payload from the copied one.
    """
    [(_, path)] = segments(folder / "lane-0")
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        length = struct.unpack_from("<II", data, pos)[0]
        payload = data[pos + 8:pos + 8 + length]
        if event_id.encode() in payload:
            forged = payload_of(payload)
            path.write_bytes(data + struct.pack("<II", len(forged), crc32c(forged)) + forged)
            return
        pos += 8 + length
    raise AssertionError("record not found")


def test_a_forged_record_of_the_wrong_shape_is_damage_not_an_error(tmp_path: Path) -> None:
    url, folder, keys, ids = recorded(tmp_path)
    add_frame(folder, ids[2], lambda payload: payload[:payload.index(b",")] + b"]")
    report = check(url, folder, keys)
    assert [line for line in report.damage if "not an audit record" in line] == [
        "lane-0 offset 14: not an audit record"]  # after 14 real records
    assert report.journal.ok


def test_a_forged_second_record_at_a_seq_is_an_insertion_not_an_error(tmp_path: Path) -> None:
    url, folder, keys, ids = recorded(tmp_path)
    other = ids[6][:-1] + "z"  # sorts after the real one
    add_frame(folder, ids[6], lambda payload: payload.replace(ids[6].encode(), other.encode()))
    report = check(url, folder, keys)
    [problem] = report.journal.problems
    assert (problem.kind, problem.event_id, problem.seq) == ("inserted", other, 7)
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 1
    assert f"journal: inserted: event {other}" in done.stdout


def test_a_forged_record_whose_seq_is_not_a_number_is_reported_not_an_error(
    tmp_path: Path,
) -> None:
    url, folder, keys, ids = recorded(tmp_path)
    [(_, path)] = segments(folder / "lane-0")
    data, out, pos = path.read_bytes(), b"", 0
    while pos < len(data):  # rewrite the frame of ids[6] with its seq as text
        length = struct.unpack_from("<II", data, pos)[0]
        payload = data[pos + 8:pos + 8 + length]
        if ids[6].encode() in payload:
            row = orjson.loads(payload)
            row[-3] = "seven"
            payload = orjson.dumps(row)
        out += struct.pack("<II", len(payload), crc32c(payload)) + payload
        pos += 8 + length
    path.write_bytes(out)
    report = check(url, folder, keys)
    assert not report.journal.ok
    assert [(p.kind, p.event_id) for p in report.index] == [("altered", ids[6])]


def test_a_journal_checkpoint_value_of_another_type_is_named_not_a_crash(tmp_path: Path) -> None:
    """A forged checkpoint record whose signature or writer is a list, not text: verify names
    a bad checkpoint (with a traceback before)."""
    url, folder, keys, _ = recorded(tmp_path)
    store = open_store(url, create=False)
    [(cp_id, writer, signature)] = store.rows(
        "SELECT checkpoint_id, writer_id, signature FROM audit_checkpoint WHERE kind = 'close'")
    store.close()
    for old in (signature, writer):
        rewrite_frame(folder, cp_id, f'"{old}"'.encode(), f'["{"a" * (len(old) - 2)}"]'.encode())
        report = check(url, folder, keys)
        assert "bad_checkpoint" in [p.kind for p in report.journal.problems]
        done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
