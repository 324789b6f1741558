"""Review of the newest fast paths: a decision refused for want of time says so in the trail.

A decision that is not durable by ``Guard.durable_within`` is refused
``audit_unavailable``; should the journal write it after all, the trail must
say what the caller got: a 403 ``outcome`` with ``detail`` = ``audit_unavailable``
follows it. The journal is made slow for real: the witness file (a full pipe
here, as a hung network mount) holds the writer's thread in the batch before
the caller's, so the caller's event is written only after its deadline passed.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opskit import full_pipe

from guard import Reason, Request
from guard._guard import Guard
from guard.audit import EventKind, JournalTrail
from guard.audit._journal import durable_end
from guard.config import AuditSettings
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder

REQUEST = Request("svc:crm", "relationship.management", ("contact",), subject="c-0001")


def _sync(guard: Guard) -> Any:
    return guard.check(REQUEST)


def _async(guard: Guard) -> Any:
    return asyncio.run(guard.acheck(REQUEST))


@pytest.mark.parametrize("check", [_sync, _async], ids=["check", "acheck"])
def test_a_decision_durable_after_its_deadline_is_followed_by_its_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check: Callable[[Guard], Any]
) -> None:
    monkeypatch.setattr(Guard, "durable_within", 1.0)
    trail = JournalTrail.open(AuditSettings(
        store=f"sqlite:///{tmp_path / 'audit.db'}", hmac_key=tmp_path / "hmac.key",
        signing_key=tmp_path / "signing.key", witness=tmp_path / "witness.jsonl",
        checkpoint_every=1))  # every batch ends with a checkpoint for the witness
    guard = Guard(PolicyHolder(lambda: load_policy(None)), trail, hmac_key=b"h" * 32)
    try:
        assert check(guard).decision.allowed
        witness = trail.writer._witness
        assert witness is not None
        while not trail.writer._idle:  # its batch handed to the witness too: nothing in hand
            time.sleep(0.01)
        read, write = full_pipe()
        good = os.dup(witness._fd)
        os.dup2(write, witness._fd)  # the next batch's witness write hangs, after its append
        answers: list[Any] = []
        caller = threading.Thread(target=lambda: answers.append(check(guard)))
        try:
            before = durable_end(trail.journal.folder)
            trail.post_fields(EventKind.HEARTBEAT, {"detail": "the batch before"})
            while durable_end(trail.journal.folder) == before:  # appended: its witness hangs
                time.sleep(0.01)
            caller.start()
            caller.join(timeout=60)
        finally:
            os.dup2(good, witness._fd)
            os.close(good)
            os.close(write)
            while os.read(read, 65536):  # the hung write goes through; then the pipe ends
                pass
            os.close(read)
            caller.join()
        [refused] = answers
        assert refused.decision.reason is Reason.AUDIT_UNAVAILABLE
        trail.flush()
        with sqlite3.connect(tmp_path / "audit.db") as db:
            decisions = db.execute("SELECT event_id, allowed FROM audit_event "
                                   "WHERE kind = 'decision' ORDER BY seq").fetchall()
            assert len(decisions) == 2
            assert decisions[-1][1] == 1  # allowed, and written after all
            outcomes = db.execute("SELECT http_status, detail FROM audit_event "
                                  "WHERE decision_ref = ?", (decisions[-1][0],)).fetchall()
        assert outcomes == [(403, "audit_unavailable")]
    finally:
        guard.close()
