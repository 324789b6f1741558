"""Deleting the newest events together with their checkpoints: the witness file catches it.

Inside the store that deletion leaves a chain that looks like a writer stopped
early; the checkpoints the writer also appended to the witness (outside the
store) still cover the deleted events.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard.audit import JournalTrail
from guard.config import AuditSettings
from tests.security.audit_tamper_kit import (
    HMAC_KEY,
    AuditKeys,
    check,
    cli_verify,
    event,
    make_keys,
    record,
    record_event,
    sql,
)

SUBJECTS = [f"subject-{i}" for i in range(20)]


@pytest.fixture
def audit_keys(tmp_path: Path) -> AuditKeys:
    return make_keys(tmp_path)


def test_deleting_the_newest_events_and_their_checkpoints_is_caught_with_the_witness(
    store_url: str, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    witness = tmp_path / "witness" / "checkpoints.jsonl"
    events = record(store_url, audit_keys, SUBJECTS, checkpoint_every=5, witness=witness)
    assert check(store_url, audit_keys, witness).ok
    sql(store_url, "DELETE FROM audit_event WHERE seq > 10")
    sql(store_url, "DELETE FROM audit_checkpoint WHERE seq > 10")

    # Within the store alone this looks like a writer that stopped after seq 10.
    assert check(store_url, audit_keys).ok
    report = check(store_url, audit_keys, witness)
    assert [(p.kind, p.event_id) for p in report.problems] == [("truncated", events[9].event_id)]
    done = cli_verify(store_url, audit_keys, tmp_path, "--witness", str(witness))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "truncated" in done.stdout


def test_deleting_a_whole_chain_is_caught_with_the_witness(
    store_url: str, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.jsonl"
    record(store_url, audit_keys, SUBJECTS[:3], checkpoint_every=5, witness=witness)
    sql(store_url, "DELETE FROM audit_event")
    sql(store_url, "DELETE FROM audit_checkpoint")
    assert check(store_url, audit_keys).ok  # an empty store proves nothing by itself
    report = check(store_url, audit_keys, witness)
    assert [p.kind for p in report.problems] == ["truncated"]


def test_a_deleted_checkpoint_the_witness_holds_is_reported(
    store_url: str, audit_keys: AuditKeys, tmp_path: Path
) -> None:
    witness = tmp_path / "witness.jsonl"
    record(store_url, audit_keys, SUBJECTS, checkpoint_every=50, witness=witness)
    sql(store_url, "DELETE FROM audit_checkpoint WHERE kind = 'close'")
    report = check(store_url, audit_keys, witness)
    assert [p.kind for p in report.problems] == ["deleted"]
    assert "witness" in report.problems[0].message


def test_a_forged_witness_line_is_refused(audit_keys: AuditKeys, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    witness = tmp_path / "witness.jsonl"
    record(url, audit_keys, SUBJECTS[:3], witness=witness)
    lines = witness.read_text().splitlines()
    forged = json.loads(lines[-1])
    forged["seq"] = 99
    witness.write_text("\n".join([*lines, json.dumps(forged)]) + "\n")
    report = check(url, audit_keys, witness)
    assert [p.kind for p in report.problems] == ["bad_checkpoint"]


def test_the_journal_writer_signs_checkpoints_and_feeds_the_witness(
    audit_keys: AuditKeys, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    witness = tmp_path / "witness.jsonl"
    settings = AuditSettings(store=url, hmac_key=audit_keys.hmac, signing_key=audit_keys.signing,
                             checkpoint_every=5, witness=witness)
    trail = JournalTrail(settings)
    for i in range(12):
        record_event(trail, event(f"journal-{i}"))
    trail.close()
    kinds = [(json.loads(line)["kind"], json.loads(line)["seq"])
             for line in witness.read_text().splitlines()]
    assert kinds == [("open", 0), ("periodic", 5), ("periodic", 10), ("close", 12)]
    assert HMAC_KEY.hex() in audit_keys.hmac.read_text()
    report = check(url, audit_keys, witness)
    assert report.ok, report.problems
    assert report.notes == ()


def test_a_refused_witness_catches_up_in_order(tmp_path: Path) -> None:
    """Checkpoints the witness refused (a full disk) are appended first once it accepts."""
    import logging
    import os
    import threading

    from guard.audit._checkpoint import Checkpoint, CheckpointKind
    from guard.audit._jwriter import _WitnessRelay
    from guard.audit._witness import Witness, read_witness

    def checkpoint(seq: int) -> Checkpoint:
        return Checkpoint(f"cp-{seq}", "w-1", seq, "00" * 32, "2026-11-29T00:00:00.000000Z",
                          CheckpointKind.PERIODIC, "k", "sig")

    witness = Witness(Path("/dev/full"))  # every write: ENOSPC
    records: list[logging.LogRecord] = []
    refused = threading.Event()
    handler = logging.Handler()
    handler.emit = lambda record: (records.append(record), refused.set())  # type: ignore[method-assign]
    logging.getLogger("guard.audit").addHandler(handler)
    relay = _WitnessRelay(witness)
    path = tmp_path / "witness.jsonl"
    try:
        relay.publish([checkpoint(1)])
        assert refused.wait(10)
        relay.publish([checkpoint(2)])
        accepting = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(accepting, witness._fd)  # the disk has room again
        os.close(accepting)
        relay.publish([checkpoint(3)])
        relay.close(10)
    finally:
        logging.getLogger("guard.audit").removeHandler(handler)
    assert len(records) == 1  # the first refusal is logged, the rest kept quietly
    assert [cp.seq for cp in read_witness(path).checkpoints] == [1, 2, 3]


def test_a_witness_on_a_fifo_publishes_each_checkpoint_exactly_once(tmp_path: Path) -> None:
    """A FIFO cannot be fsynced (EINVAL): what was written to it counts as published."""
    import os
    import threading

    from guard.audit._checkpoint import Checkpoint, CheckpointKind
    from guard.audit._witness import Witness

    def checkpoint(seq: int) -> Checkpoint:
        return Checkpoint(f"cp-{seq}", "w-1", seq, "00" * 32, "2026-11-29T00:00:00.000000Z",
                          CheckpointKind.PERIODIC, "k", "sig")

    fifo = tmp_path / "collector.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []

    def collect() -> None:
        with fifo.open("rb") as handle:
            received.extend(handle)

    reader = threading.Thread(target=collect)
    reader.start()
    witness = Witness(fifo)
    for seq in range(1, 6):
        witness.publish([checkpoint(seq)])
    witness.close()
    reader.join(10)
    assert not reader.is_alive()
    assert [json.loads(line)["seq"] for line in received] == [1, 2, 3, 4, 5]


def test_witness_lines_that_are_not_checkpoints_are_named_and_a_torn_last_line_skipped(
    tmp_path: Path,
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from guard.audit._checkpoint import CheckpointKind, sign_checkpoint
    from guard.audit._verify import verify_chains
    from guard.audit._witness import Witness, read_witness

    key = Ed25519PrivateKey.generate()
    good = sign_checkpoint(key, checkpoint_id="cp-1", writer_id="w-1", seq=0, hash_="0" * 64,
                           ts="2026-11-30T00:00:00.000000Z", kind=CheckpointKind.OPEN)
    path = tmp_path / "witness.jsonl"
    witness = Witness(path)
    witness.publish([good])
    witness.close()
    fields = json.loads(path.read_text())
    with path.open("a") as handle:
        handle.write("not json\n")  # line 2
        handle.write(json.dumps({**fields, "seq": "0"}) + "\n")  # 3: a field's type
        handle.write(json.dumps({k: v for k, v in fields.items() if k != "kind"}) + "\n")  # 4
        handle.write(json.dumps({**fields, "kind": "sideways"}) + "\n")  # 5
        handle.write(json.dumps([1, 2]) + "\n")  # 6: not an object
        handle.write(json.dumps({**fields, "terms": 7}) + "\n")  # 7
        handle.write(json.dumps(fields)[:20])  # torn while appending: never covered anything
    read = read_witness(path)
    assert read.checkpoints == (good,)
    assert read.bad_lines == (2, 3, 4, 5, 6, 7)
    report = verify_chains([], [good], key.public_key(), witness=read)
    assert [str(p) for p in report.problems] == [
        "bad_checkpoint: writer (witness): witness line(s) 2, 3, 4, 5, 6 are not checkpoints"]
