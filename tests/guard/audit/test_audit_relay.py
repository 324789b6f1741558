"""The audit relay: events recorded by a child process, fail-closed when it is gone."""

from __future__ import annotations

import asyncio
import marshal
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from guard import AuditUnavailableError
from guard._guard import Guard
from guard._types import Action, Reason, Request
from guard.audit import (
    AuditEvent,
    EventKind,
    derive_chain_key,
    load_hmac_key,
    load_public_key,
    open_store,
    pseudonymise,
    verify,
)
from guard.audit._pipeline import outcome_fields
from guard.audit._relay import RelayTrail
from guard.audit._relay_wire import RECORD, FrameReader, WireError, frame
from guard.config import AuditSettings, PolicySettings, Settings
from tests.guard.audit.conftest import acknowledged_until_killed, decision_event

REPO = Path(__file__).resolve().parents[3]
ALLOWED = Request("svc:crm", "relationship.management", ("identity", "contact"),
                  Action.READ, "c-0042")


def _settings(tmp_path: Path, **overrides: object) -> AuditSettings:
    values: dict[str, object] = {
        "store": f"sqlite:///{tmp_path / 'audit.db'}",
        "hmac_key": tmp_path / "keys" / "subject-hmac.key",
        "signing_key": tmp_path / "keys" / "audit-signing.key",
        "writer": "process",
        "checkpoint_every": 50,
    }
    values.update(overrides)
    return AuditSettings.model_validate(values)


def _stored(tmp_path: Path) -> dict[str, tuple[object, ...]]:
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:
        rows = store.rows("SELECT event_id, kind, subject, http_status, decision_ref, trace_id "
                          "FROM audit_event")
    finally:
        store.close()
    return {row[0]: tuple(row[1:]) for row in rows}


def _chain_key(tmp_path: Path) -> bytes:
    return derive_chain_key(load_hmac_key(tmp_path / "keys" / "subject-hmac.key"))


def _verify(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'audit.db'}", create=False)
    try:
        report = verify(store, load_public_key(tmp_path / "keys" / "audit-signing.key.pub"),
                        chain_key=_chain_key(tmp_path))
    finally:
        store.close()
    assert report.ok, report.problems


def test_events_of_every_kind_of_call_arrive_once_and_verify(tmp_path: Path) -> None:
    trail = RelayTrail(_settings(tmp_path))
    built = decision_event()
    trail.record(built)
    first = trail.record_fields(EventKind.OUTCOME, outcome_fields("d-sync", 200, None))

    async def calls() -> list[str]:
        ids = await asyncio.gather(*(
            trail.arecord_fields(EventKind.OUTCOME, outcome_fields(f"d-{i}", 201, None))
            for i in range(40)))
        await trail.arecord(decision_event())
        trail.post_fields(EventKind.OUTCOME, outcome_fields("d-posted", 202, None))
        trail.post(decision_event(subject_id="posted"))
        trail.flush()  # on the loop thread: the frames it holds are sent first
        return ids

    ids = asyncio.run(calls())
    assert trail.ready()[0] is True
    trail.close()
    stored = _stored(tmp_path)
    assert len(stored) == 1 + 1 + 40 + 1 + 2
    assert stored[built.event_id][0] == "decision"
    assert stored[first][2:4] == (200, "d-sync")
    assert {stored[i][3] for i in ids} == {f"d-{i}" for i in range(40)}
    assert sorted(row[2] for row in stored.values() if row[0] == "outcome") == [
        200, *([201] * 40), 202]
    _verify(tmp_path)  # one chain, checkpoints included, closed by the relay


@pytest.mark.postgres
def test_a_relay_writes_to_postgresql_too(tmp_path: Path, pg_url: str) -> None:
    trail = RelayTrail(_settings(tmp_path, store=pg_url))
    event_id = trail.record_fields(EventKind.OUTCOME, outcome_fields("d-pg", 200, None))
    trail.close()
    store = open_store(pg_url, create=False)
    try:
        rows = store.rows("SELECT event_id, decision_ref FROM audit_event WHERE kind = 'outcome'")
        report = verify(store, load_public_key(tmp_path / "keys" / "audit-signing.key.pub"),
                        chain_key=_chain_key(tmp_path))
    finally:
        store.close()
    assert [tuple(row) for row in rows] == [(event_id, "d-pg")]
    assert report.ok, report.problems


def test_threads_record_side_by_side_each_on_its_own_connection(tmp_path: Path) -> None:
    trail = RelayTrail(_settings(tmp_path))
    events = [[decision_event(subject_id=f"s{n}-{i}") for i in range(20)] for n in range(16)]
    errors: list[BaseException] = []

    def work(mine: list[AuditEvent]) -> None:
        try:
            for event in mine:
                trail.record(event)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(mine,)) for mine in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trail.close()
    assert errors == []
    assert set(_stored(tmp_path)) == {e.event_id for mine in events for e in mine}
    _verify(tmp_path)


def test_closing_on_the_loop_keeps_the_events_just_posted(tmp_path: Path) -> None:
    trail = RelayTrail(_settings(tmp_path))

    async def post_then_close() -> None:  # as a lifespan shutdown does
        for i in range(5):
            trail.post_fields(EventKind.OUTCOME, outcome_fields(f"d-{i}", 200, None))
        trail.close()

    asyncio.run(post_then_close())
    assert sorted(row[3] for row in _stored(tmp_path).values()) == [f"d-{i}" for i in range(5)]
    _verify(tmp_path)


def test_the_relay_pseudonymises_subjects_and_keeps_the_callers_trace(tmp_path: Path) -> None:
    settings = Settings(audit=_settings(tmp_path), policy=PolicySettings(dir=REPO / "policies"))
    tracer = TracerProvider().get_tracer("test")
    with Guard.from_settings(settings) as guard:
        assert isinstance(guard.trail, RelayTrail)
        with tracer.start_as_current_span("request") as span:
            checked = asyncio.run(guard.acheck(ALLOWED))
        trace_id = format(span.get_span_context().trace_id, "032x")
        refused = guard.check(Request("svc:unknown", "relationship.management", ("contact",)))
        assert guard.record_outcome(checked.decision_id, 204)
    assert checked.decision.allowed
    assert refused.decision.reason is Reason.UNKNOWN_CALLER
    stored = _stored(tmp_path)
    key = load_hmac_key(tmp_path / "keys" / "subject-hmac.key")
    assert stored[checked.decision_id][1] == pseudonymise(key, "c-0042")
    assert stored[checked.decision_id][4] == trace_id
    assert stored[refused.decision_id][0] == "decision"
    assert not any("c-0042" in str(row) for row in stored.values())
    _verify(tmp_path)


def test_a_dead_relay_means_audit_unavailable_then_a_new_one_takes_over(
    tmp_path: Path,
) -> None:
    settings = Settings(audit=_settings(tmp_path), policy=PolicySettings(dir=REPO / "policies"))
    with Guard.from_settings(settings) as guard:
        trail = guard.trail
        assert isinstance(trail, RelayTrail)
        first = trail.pid
        assert first is not None
        assert guard.check(ALLOWED).decision.allowed

        async def after_kill() -> tuple[Reason, Reason]:
            before = await guard.acheck(ALLOWED)  # the loop's connection is open
            os.kill(first, signal.SIGKILL)
            await asyncio.to_thread(_wait_exit, trail)
            refused = await guard.acheck(ALLOWED)
            return before.decision.reason, refused.decision.reason

        assert asyncio.run(after_kill()) == (Reason.ALLOWED, Reason.AUDIT_UNAVAILABLE)
        assert guard.check(ALLOWED).decision.reason is Reason.AUDIT_UNAVAILABLE
        assert guard.ready()[0] is False
        time.sleep(1.1)  # restarts are at most once a second
        checked = guard.check(ALLOWED)
        assert checked.decision.allowed
        assert trail.pid not in (None, first)
    assert checked.decision_id in _stored(tmp_path)
    _verify(tmp_path)  # the killed relay's chain ends without its closing checkpoint: a note


def test_a_relay_that_stops_answering_fails_the_waiting_calls(tmp_path: Path) -> None:
    trail = RelayTrail(_settings(tmp_path), ack_timeout=0.5)
    pid = trail.pid
    assert pid is not None

    async def stalled() -> None:
        await trail.arecord(decision_event())  # connected and answering
        os.kill(pid, signal.SIGSTOP)
        try:
            await trail.arecord(decision_event())
        finally:
            os.kill(pid, signal.SIGCONT)

    try:
        with pytest.raises(AuditUnavailableError, match=r"did not answer within 0\.5 s"):
            asyncio.run(stalled())
    finally:
        trail.close()


def test_a_relay_that_cannot_open_its_store_refuses_to_start(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(AuditUnavailableError, match="did not start"):
        RelayTrail(_settings(tmp_path, store=f"sqlite:///{blocked / 'audit.db'}"))


def test_the_relay_commits_and_exits_when_its_service_is_killed(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
    )
    assert child.stdout is not None
    relay_pid = int(child.stdout.readline())
    acknowledged = acknowledged_until_killed(child, 300)
    deadline = time.monotonic() + 30
    while _alive(relay_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(relay_pid)  # its life line closed: it finished and exited
    stored = _stored(tmp_path)
    assert [i for i in acknowledged if i not in stored] == []
    _verify(tmp_path)


CHILD = r"""
import asyncio, sys
from pathlib import Path
from guard.audit import EventKind
from guard.audit._pipeline import outcome_fields
from guard.audit._relay import RelayTrail
from guard.config import AuditSettings

tmp = Path(sys.argv[1])
trail = RelayTrail(AuditSettings(store=f"sqlite:///{tmp / 'audit.db'}",
                                 hmac_key=tmp / "keys" / "subject-hmac.key",
                                 signing_key=tmp / "keys" / "audit-signing.key",
                                 writer="process", checkpoint_every=50))
print(trail.pid, flush=True)

async def work(n):
    i = 0
    while True:
        fields = outcome_fields(f"{n}-{i}", 200, None)
        event_id = await trail.arecord_fields(EventKind.OUTCOME, fields)
        sys.stdout.write(event_id + "\n")
        sys.stdout.flush()
        i += 1

async def main():
    await asyncio.gather(*(work(n) for n in range(16)))

asyncio.run(main())
"""


def _wait_exit(trail: RelayTrail) -> None:
    deadline = time.monotonic() + 10
    while trail.pid is not None and time.monotonic() < deadline:
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_bad_frame_closes_only_that_connection(tmp_path: Path) -> None:
    trail = RelayTrail(_settings(tmp_path))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bad:
            bad.settimeout(10)
            bad.connect(trail.socket_path)
            bad.sendall(frame((1, RECORD, ("not", "an", "event"))))
            reader = FrameReader()
            acks = reader.feed(bad.recv(1 << 16))
            assert acks[0][0][0] == 1
            assert "event" in acks[0][0][1]  # refused, with why
            bad.sendall(b"\x00\x00\x00\x05garbage")
            assert bad.recv(1 << 16) == b""  # closed on an unreadable frame
        trail.record(decision_event())  # the relay and its other clients go on
        assert trail.ready()[0] is True
    finally:
        trail.close()
    assert len(_stored(tmp_path)) == 1


messages = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(st.lists(messages, max_size=8), st.lists(st.integers(1, 40), max_size=20))
def test_frames_split_anywhere_read_back_whole(sent: list[object], cuts: list[int]) -> None:
    stream = b"".join(frame(message) for message in sent)
    reader, received, at = FrameReader(), [], 0
    for size in [*cuts, len(stream)]:
        received += reader.feed(stream[at:at + size])
        at += size
    assert received == sent


def test_an_oversized_or_unreadable_frame_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="over the limit"):
        FrameReader().feed(b"\xff\xff\xff\xff")
    with pytest.raises(WireError, match="unreadable"):
        FrameReader().feed(b"\x00\x00\x00\x01\xff")
    assert marshal.loads(frame((1, 2))[4:]) == (1, 2)
