"""Guard.decide(per_category=True): released/withheld recorded; a register entry always counts."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from pathlib import Path

from guard import Reason, Request
from guard._guard import Checked, Guard
from guard.audit import EventFilter, open_store, query_events
from guard.policy import load_policy
from guard.policy._holder import PolicyHolder
from guard.rights import EntryKind, Record, Register
from tests.guard.audit.conftest import keys_at, make_trail

KEY = b"k" * 32
CATS = ("identity.name", "contact.email", "financial.payment_card")


def judged(guard: Guard, request: Request) -> Checked:
    """Decide category by category and record it durably."""
    return asyncio.run(guard.acommit(guard.decide(request, per_category=True)))


def test_a_register_entry_is_never_hidden_by_a_remembered_judgement(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    register = Register(KEY)
    trail = make_trail(f"sqlite:///{db}", keys_at(tmp_path / "s.key"), hmac_key=KEY,
                       journal=tmp_path / "journal")
    guard = Guard(PolicyHolder(lambda: load_policy(None)), trail, hmac_key=KEY,
                  register=register)
    request = Request("svc:crm", "relationship.management", CATS, subject="c-1")
    first = judged(guard, request)
    assert first.categories is not None
    assert first.categories.released == ("identity.name", "contact.email")
    register.apply(register.pseudonym("c-1"),
                   [Record(EntryKind.RESTRICTION, "", date(2020, 1, 1))])
    second = judged(guard, request)
    assert second.categories is not None
    assert second.categories.released == ()
    assert second.decision.reason is Reason.PROCESSING_RESTRICTED
    other = judged(guard, Request("svc:crm", "relationship.management", CATS, subject="c-2"))
    assert other.decision.allowed
    guard.close()
    store = open_store(f"sqlite:///{db}")
    rows = {r.event.event_id: r.event for r in query_events(store, EventFilter())}
    store.close()
    detail = json.loads(rows[first.decision_id].detail or "")
    assert detail == {"released": ["identity.name", "contact.email"],
                      "withheld": {"financial.payment_card": "category_not_in_purpose"}}
    assert rows[first.decision_id].categories == CATS
    assert json.loads(rows[second.decision_id].detail or "")["withheld"] == {
        "identity.name": "processing_restricted", "contact.email": "processing_restricted",
        "financial.payment_card": "category_not_in_purpose"}
