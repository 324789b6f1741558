"""Review of the newest fast paths: a decision refused for want of time says so in the trail.

A decision that is not durable by ``Guard.durable_within`` is refused
``audit_unavailable``; should the journal write it after all, the trail must
say what the caller got: a 403 ``outcome`` with ``detail`` = ``audit_unavailable``
follows it. The journal is made slow for real: its segment (swapped for a full
pipe, as a hung disk) holds the writer's thread in the batch before the
caller's, which then fails (the pipe closes), so the caller's event is written
only after its deadline passed.
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

from guard import Reason, Request
from guard._guard import Guard
from guard.audit import EventKind, JournalTrail
from guard.config import AuditSettings
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from tests.guard.audit.conftest import full_pipe

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
    trail = JournalTrail(AuditSettings(
        store=f"sqlite:///{tmp_path / 'audit.db'}", hmac_key=tmp_path / "hmac.key",
        signing_key=tmp_path / "signing.key"))
    guard = Guard(PolicyHolder(lambda: load_policy(None)), trail, hmac_key=b"h" * 32)
    try:
        assert check(guard).decision.allowed
        writer, segment = trail.writer, trail.journal._fd
        while not writer._idle:  # its batch is done: nothing in hand
            time.sleep(0.01)
        read, write = full_pipe()
        good = os.dup(segment)
        os.dup2(write, segment)  # the next batch's append hangs in the kernel
        answers: list[Any] = []
        caller = threading.Thread(target=lambda: answers.append(check(guard)))
        try:
            trail.post_fields(EventKind.HEARTBEAT, {"detail": "the batch before"})
            while writer._queue or writer._idle:  # taken: the writer is in its append
                time.sleep(0.01)
            caller.start()
            caller.join(timeout=60)
        finally:
            os.dup2(good, segment)
            os.close(good)
            os.close(write)
            os.close(read)  # the hung append fails (EPIPE): that batch was never acknowledged
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
