"""The register in the audit store: append-only, pseudonyms only, reloaded, followed."""

from __future__ import annotations

import threading
import time
from datetime import date

import pytest
from rightskit import KEY, SUBJECT, Events

from guard._types import Reason
from guard.audit import open_store
from guard.policy import load_policy
from guard.rights import Change, EntryKind, Register, RegisterStore

POLICY = load_policy(None)
K = EntryKind


def change(kind: EntryKind, purpose: str = "", on: date | None = None,
           subject: str = SUBJECT) -> Change:
    return Change(subject, kind, purpose, on, "T-1", "test")


def eventually(check: object, seconds: float = 10.0) -> None:
    """Wait until ``check()`` is true (no timing assert: a generous deadline)."""
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("the change did not reach the other register")
        time.sleep(0.02)


def test_entries_survive_a_reload_and_store_only_pseudonyms(store_url: str) -> None:
    first = Register.open(store_url, KEY)
    try:
        first.record(change(K.OBJECTION, "marketing"), POLICY, Events())
        first.record(change(K.END_OF_RELATIONSHIP, on=date(2020, 1, 1)), POLICY, Events())
        first.record(change(K.RESTRICTION, subject="other"), POLICY, Events())
    finally:
        first.close()
    again = Register.open(store_url, KEY)
    try:
        assert again.lookup(SUBJECT) == first.lookup(SUBJECT)  # the index of `first` stayed
        assert [e.kind for e in again.history(SUBJECT)] == [K.OBJECTION,
                                                           K.END_OF_RELATIONSHIP]
        assert [e.seq for e in again.history(SUBJECT)] == [1, 2]
        assert again.lookup("nobody") is None
    finally:
        again.close()
    reader = open_store(store_url, create=False)
    try:
        subjects = {r[0] for r in reader.rows("SELECT subject FROM subject_register")}
    finally:
        reader.close()
    assert SUBJECT not in subjects
    assert "other" not in subjects
    assert all(len(s) == 64 for s in subjects)


def test_concurrent_writers_get_distinct_places(store_url: str) -> None:
    stores = [RegisterStore(store_url) for _ in range(2)]
    registers = [Register(KEY, s) for s in stores]
    errors: list[BaseException] = []

    def write(register: Register) -> None:
        try:
            for _ in range(10):
                register.record(change(K.RESTRICTION), POLICY, Events())
                register.record(change(K.RESTRICTION_LIFTED), POLICY, Events())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(r,)) for r in registers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    history = registers[0].history(SUBJECT)
    assert [e.seq for e in history] == list(range(1, 41))
    for register in registers:
        register.close()


def test_a_running_register_follows_changes_made_elsewhere(store_url: str) -> None:
    running = Register.open(store_url, KEY, watch=True)
    other = Register.open(store_url, KEY)
    try:
        if running.store is not None and running.store.postgres:
            eventually(lambda: running.listening)
        other.record(change(K.ERASURE_REQUESTED), POLICY, Events())
        eventually(lambda: running.lookup(SUBJECT) is not None)
        from rightskit import ask

        assert ask(POLICY, running, "order.processing").reason is Reason.ERASURE_REQUESTED
        other.record(change(K.ERASURE_REFUSED), POLICY, Events())
        eventually(lambda: running.lookup(SUBJECT) == ())
    finally:
        running.close()
        other.close()


def test_an_entry_the_audit_cannot_record_is_not_stored(store_url: str) -> None:
    from guard._errors import AuditUnavailableError

    def broken(*_: object) -> str:
        raise AuditUnavailableError("audit store down")

    register = Register.open(store_url, KEY)
    try:
        with pytest.raises(AuditUnavailableError):
            register.record(change(K.RESTRICTION), POLICY, broken)
        assert register.history(SUBJECT) == []
        assert register.lookup(SUBJECT) is None
    finally:
        register.close()


@pytest.mark.postgres
def test_a_replica_says_it_follows_only_once_it_has_read_the_register_again(
        pg_url: str) -> None:
    """Listening again, a replica reads the register again (changes made while it was not)
    and said it was listening before that read was over: after a lost link, its health
    check said "following" while it still allowed what the subject had refused meanwhile."""
    running = Register.open(pg_url, KEY)
    other = Register.open(pg_url, KEY)
    assert running.store is not None
    entered, release = threading.Event(), threading.Event()
    every_entry = running.store.every_entry

    def held() -> object:  # the watcher's read again, held until the test lets it go
        entered.set()
        assert release.wait(30)
        return every_entry()

    running.store.every_entry = held  # type: ignore[method-assign]
    try:
        other.record(change(K.ERASURE_REQUESTED), POLICY, Events())
        running.watch()
        assert entered.wait(30)
        assert running.listening is not True
        assert running.status()["following"] is False  # what health checks show
        assert running.lookup(SUBJECT) is None
        release.set()
        eventually(lambda: running.listening)
        assert running.status()["following"] is True
        assert running.lookup(SUBJECT) is not None  # following: the erasure is known
    finally:
        release.set()
        running.close()
        other.close()
