"""Tampering with rows directly in the store: verify names the first bad event."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from guard.audit import (
    AuditEvent,
    VerifyReport,
    load_public_key,
    open_store,
    verify,
)
from guard.audit._fields import row_event
from guard.audit._schema import EVENT_COLUMNS
from tests.guard.audit.conftest import (
    CHAIN_KEY,
    HMAC_KEY,
    Keys,
    decision_event,
    linked,
    make_trail,
    record,
    row_of,
    sql,
)


def insert_row(url: str, event: AuditEvent) -> None:
    marks = ", ".join("?" * len(row_of(event)))
    sql(url, f"INSERT INTO audit_event ({EVENT_COLUMNS}) VALUES ({marks})", row_of(event))


def chain(url: str, keys: Keys, n: int = 20) -> list[AuditEvent]:
    """Record ``n`` events (checkpoint every 5), close, and return them as stored."""
    trail = make_trail(url, keys, checkpoint_every=5)
    for i in range(n):
        record(trail, decision_event(subject_id=f"subject-{i}"))
    trail.close()
    store = open_store(url, create=False)
    rows = store.rows(f"SELECT {EVENT_COLUMNS} FROM audit_event ORDER BY seq")
    store.close()
    return [row_event(r) for r in rows]


def check(url: str, keys: Keys) -> VerifyReport:
    store = open_store(url, create=False)
    try:
        return verify(store, load_public_key(keys.public), chain_key=CHAIN_KEY)
    finally:
        store.close()


def edit(url: str, ev: list[AuditEvent]) -> str:
    sql(url, "UPDATE audit_event SET caller = 'svc:evil' WHERE seq = 7")
    return ev[6].event_id


def edit_and_rehash(url: str, ev: list[AuditEvent]) -> str:
    forged = linked(dataclasses.replace(ev[6], caller="svc:evil"),
                    ev[6].writer_id, 7, ev[6].prev_hash)
    sql(url, "UPDATE audit_event SET caller = ?, hash = ? WHERE seq = 7",
            (forged.caller, forged.hash))
    return ev[6].event_id


def delete(url: str, ev: list[AuditEvent]) -> str:
    sql(url, "DELETE FROM audit_event WHERE seq = 7")
    return ev[7].event_id


def insert(url: str, ev: list[AuditEvent]) -> str:
    sql(url, "UPDATE audit_event SET seq = seq + 1000 WHERE seq >= 7")
    sql(url, "UPDATE audit_event SET seq = seq - 999 WHERE seq >= 1000")
    forged = linked(decision_event(caller="svc:evil"), ev[0].writer_id, 7, ev[5].hash)
    insert_row(url, forged)
    return forged.event_id


def reorder(url: str, ev: list[AuditEvent]) -> str:
    sql(url, "UPDATE audit_event SET seq = -1 WHERE seq = 7")
    sql(url, "UPDATE audit_event SET seq = 7 WHERE seq = 8")
    sql(url, "UPDATE audit_event SET seq = 8 WHERE seq = -1")
    return ev[7].event_id  # the event that moved up is the first out of place


def truncate(url: str, ev: list[AuditEvent]) -> str:
    sql(url, "DELETE FROM audit_event WHERE seq > 17")
    return ev[16].event_id  # the last event left; 18..20 are gone


def append_after_close(url: str, ev: list[AuditEvent]) -> str:
    forged = linked(decision_event(caller="svc:evil"), ev[0].writer_id, 21, ev[19].hash)
    insert_row(url, forged)
    return forged.event_id


CASES: list[tuple[str, Callable[[str, list[AuditEvent]], str], str]] = [
    ("edit", edit, "altered"),
    ("edit_and_rehash", edit_and_rehash, "altered"),
    ("delete", delete, "deleted"),
    # Made without the chain key, a forged event cannot carry a valid hash.
    ("insert", insert, "altered"),
    ("reorder", reorder, "reordered"),
    ("truncate", truncate, "truncated"),
    ("append_after_close", append_after_close, "altered"),
]


@pytest.mark.parametrize(("name", "tamper", "kind"), CASES, ids=[c[0] for c in CASES])
def test_verify_names_the_first_bad_event(
    store_url: str, keys: Keys, name: str, tamper: Callable[[str, list[AuditEvent]], str],
    kind: str,
) -> None:
    events = chain(store_url, keys)
    assert check(store_url, keys).ok
    bad_id = tamper(store_url, events)
    report = check(store_url, keys)
    assert not report.ok
    assert len(report.problems) == 1
    problem = report.problems[0]
    assert (problem.kind, problem.event_id) == (kind, bad_id), str(problem)


def test_a_forged_checkpoint_signature_is_caught(store_url: str, keys: Keys) -> None:
    chain(store_url, keys)
    sql(store_url, "UPDATE audit_checkpoint SET signature = ? WHERE kind = 'close'",
            ("00" * 64,))
    report = check(store_url, keys)
    assert [p.kind for p in report.problems] == ["bad_checkpoint"]


def test_a_chain_without_its_opening_checkpoint_is_caught(store_url: str, keys: Keys) -> None:
    events = chain(store_url, keys)
    sql(store_url, "DELETE FROM audit_checkpoint")
    report = check(store_url, keys)
    assert [(p.kind, p.event_id) for p in report.problems] == [("inserted", events[0].event_id)]


def test_a_row_that_claims_to_follow_itself_is_altered_not_a_crash(
    store_url: str, keys: Keys
) -> None:
    ev = chain(store_url, keys, 6)
    sql(store_url, "UPDATE audit_event SET prev_hash = hash WHERE seq = 6")
    report = check(store_url, keys)
    assert [(p.kind, p.event_id) for p in report.problems] == [("altered", ev[5].event_id)]


@pytest.mark.parametrize("assignment", [
    "allowed = 2",  # still true
    "categories = '[ \"contact.email\"]'",  # the same list, re-spaced
    "seq = 6.5",  # still seq 6 as a whole number (SQLite keeps the real)
])
def test_a_value_stored_in_another_form_than_the_guard_wrote_is_altered(
    store_url: str, keys: Keys, assignment: str
) -> None:
    if assignment.startswith("seq") and not store_url.startswith("sqlite:///"):
        pytest.skip("PostgreSQL rounds a real into a bigint column")
    ev = chain(store_url, keys, 10)
    sql(store_url, f"UPDATE audit_event SET {assignment} WHERE seq = 6")
    report = check(store_url, keys)
    assert [(p.kind, p.event_id) for p in report.problems] == [("altered", ev[5].event_id)]


@pytest.mark.parametrize("assignment", [
    "kind = 'nope'",  # no kind of checkpoint
    "seq = 'x'",  # SQLite keeps a text in an integer column
    "signature = x'00'",  # ... and a blob in a text column
    "writer_id = x'00'",
])
def test_a_checkpoint_value_of_another_type_is_a_bad_checkpoint_not_a_crash(
    store_url: str, keys: Keys, assignment: str
) -> None:
    if assignment != "kind = 'nope'" and not store_url.startswith("sqlite:///"):
        pytest.skip("PostgreSQL's columns hold their own type only")
    chain(store_url, keys)
    sql(store_url, f"UPDATE audit_checkpoint SET {assignment} WHERE kind = 'close'")
    report = check(store_url, keys)
    assert "bad_checkpoint" in [p.kind for p in report.problems]


@pytest.mark.parametrize("table", ["audit_checkpoint", "audit_event"])
def test_the_consoles_integrity_view_names_a_text_seq_instead_of_failing(
    tmp_path: Path, keys: Keys, table: str
) -> None:
    from middleware.console._integrity import check as console_check

    sqlite_url = f"sqlite:///{tmp_path / 'audit.db'}"  # PostgreSQL's columns hold ints only
    chain(sqlite_url, keys)
    sql(sqlite_url, f"UPDATE {table} SET seq = 'x' WHERE seq = (SELECT max(seq) FROM {table})")
    store = open_store(sqlite_url, create=False)
    try:
        result = console_check(store, keys.signing, HMAC_KEY)
    finally:
        store.close()
    assert result.error is None  # before: "the check failed: invalid literal for int()"
    assert not result.ok
    assert any(c.problem for c in result.chains)  # verify's finding, named per chain
