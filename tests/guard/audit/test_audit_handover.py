"""The journal writer releases a batch's producers once it is durable, before the witness and
the listeners (OTLP export) see it: a slow listener never delays a decision, and a witness
that hangs delays none (it is written on its own thread)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from guard.audit import EventKind, load_signing_key
from guard.audit._checkpoint import Checkpoint
from guard.audit._event import FIELD_NAMES
from guard.audit._fields import ChainKey
from guard.audit._journal import Journal, read_journal
from guard.audit._jwriter import JournalWriter
from guard.audit._schema import Row
from guard.audit._witness import Witness
from tests.guard.audit.conftest import CHAIN_KEY, HMAC_KEY, Keys

FIELDS = {"caller": "svc:crm", "purpose": "billing", "action": "read", "allowed": True,
          "reason": "allowed", "subject_id": "customer-1"}


class Listener:
    """A batch listener that stays inside until the test lets it go."""

    def __init__(self) -> None:
        self.inside, self.go = threading.Event(), threading.Event()
        self.rows: list[Row] = []

    def __call__(self, rows: Sequence[Row], _checkpoints: Sequence[Checkpoint]) -> None:
        self.inside.set()
        self.go.wait(30)
        self.rows += rows


def test_a_coroutine_and_a_thread_are_answered_while_the_listener_still_runs(
    keys: Keys, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "j")
    listener = Listener()
    witness = tmp_path / "witness.jsonl"
    w = JournalWriter(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(keys.signing),
                      writer_id="test", chain_key=ChainKey(CHAIN_KEY), committed=[listener],
                      witness=Witness(witness), checkpoint_every=1)

    async def commit() -> str:
        return await asyncio.wait_for(w.start(EventKind.DECISION, FIELDS), 10)

    try:
        event_id = asyncio.run(commit())  # answered while the listener is still inside
        assert listener.inside.wait(30)
        assert not listener.rows  # ... not done with the batch yet
        assert any(event_id.encode() in payload for _, payload in read_journal(tmp_path / "j"))
        listener.go.set()
        assert w.submit(EventKind.DECISION, FIELDS, timeout=30)
    finally:
        listener.go.set()
        w.close()
        journal.close()
    assert listener.rows[0][0] == event_id  # then it saw the batch
    assert len(listener.rows[0]) == len(FIELD_NAMES)  # whole rows, chain columns included
    assert witness.read_text().count("\n") >= 3  # open, each event's checkpoint, close


def test_a_witness_that_hangs_holds_no_commit(keys: Keys, tmp_path: Path) -> None:
    """The witness is a FIFO whose buffer is full: its write blocks in the kernel."""
    fifo = tmp_path / "witness.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(filler, b"x" * 65536)
    os.close(filler)
    journal = Journal(tmp_path / "j")
    w = JournalWriter(journal, hmac_key=HMAC_KEY, signing_key=load_signing_key(keys.signing),
                      writer_id="test", chain_key=ChainKey(CHAIN_KEY), witness=Witness(fifo),
                      checkpoint_every=1)  # a checkpoint in every batch
    drained = bytearray()

    def drain() -> None:
        os.set_blocking(reader, True)
        while chunk := os.read(reader, 1 << 16):  # until the witness is closed
            drained.extend(chunk)

    drainer = threading.Thread(target=drain)
    try:
        ids = [w.submit(EventKind.DECISION, FIELDS, timeout=10) for _ in range(3)]
        assert len(set(ids)) == 3  # each durable and answered while the witness hangs
    finally:
        drainer.start()  # the witness takes what waited, then the closing checkpoint
        w.close()
        journal.close()
        drainer.join(30)
        os.close(reader)
    lines = bytes(drained).lstrip(b"x").decode().splitlines()
    got = [(cp["kind"], cp["seq"]) for cp in map(json.loads, lines)]
    # A FIFO cannot be fsynced: what was written to it is published, each checkpoint once.
    assert got == [
        ("open", 0), ("periodic", 1), ("periodic", 2), ("periodic", 3), ("close", 3)]
