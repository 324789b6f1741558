"""The event: every field survives both stores; ids are time-ordered; the hash covers all."""

from __future__ import annotations

import dataclasses
import uuid

from hypothesis import given
from hypothesis import strategies as st

from guard.audit import (
    EventFilter,
    EventKind,
    new_event_id,
    open_store,
    pseudonymise,
    query_events,
)
from guard.audit._fields import ChainKey, row_event
from guard.audit._schema import EVENT_COLUMNS
from tests.guard.audit.conftest import (
    CHAIN_KEY,
    HMAC_KEY,
    Keys,
    linked,
    make_event,
    make_trail,
    record,
)


def test_every_field_round_trips_through_the_store(store_url: str, keys: Keys) -> None:
    event = make_event(
        EventKind.DECISION,
        caller="proc:mailer",
        party_type="processor",
        country="US",
        purpose="marketing.advertising",
        categories=("contact.email", "identity.name"),
        action="read",
        allowed=False,
        reason="transfer_not_safeguarded",
        rule=("check:transfer_not_safeguarded",),
        lawful_basis=("legitimate_interest",),
        policy_version="sha256:abc",
        subject_id="customer-42",
        http_method="GET",
        http_route="/customers/{id}/email",
        http_status=403,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        latency_us=57,
        detail="é ünïcode ✓",
    )
    trail = make_trail(store_url, keys)
    record(trail, event)
    writer = trail.writer_id
    trail.close()
    store = open_store(store_url, create=False)
    rows = store.rows(f"SELECT {EVENT_COLUMNS} FROM audit_event")
    assert len(rows) == 1
    stored = row_event(rows[0])
    expected = dataclasses.replace(event, writer_id=writer, seq=1, prev_hash="0" * 64,
                                   hash=stored.hash)
    assert stored == expected
    assert stored == linked(stored, writer, 1, "0" * 64, ChainKey(CHAIN_KEY), 4)  # keyed hash
    assert stored.subject == pseudonymise(HMAC_KEY, "customer-42")
    assert "customer-42" not in repr(rows)
    found = query_events(store, EventFilter(subject=stored.subject))
    store.close()
    assert [r.event for r in found] == [stored]


def test_event_ids_are_uuid7_and_time_ordered() -> None:
    ids = [new_event_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:50])


_text = st.text(max_size=20)


@given(field=st.sampled_from(["caller", "purpose", "reason", "ts", "writer_id", "prev_hash"]),
       value=st.text(min_size=1, max_size=10))
def test_changing_any_field_changes_the_hash(field: str, value: str) -> None:
    event = linked(make_event(EventKind.DECISION, caller="svc:a"), "w", 1, "0" * 64)
    changed = dataclasses.replace(event, **{field: getattr(event, field) + value})
    assert linked(changed, changed.writer_id, changed.seq, changed.prev_hash).hash != event.hash
