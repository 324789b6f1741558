"""A long-standing customer's trail: many decisions about one data subject, for the reply's PDF."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from guard.audit import AuditEvent, EventKind
from guard.audit._store import Store
from tests.guard.audit.conftest import row_of, seed

ACCESSES: tuple[tuple[str, str, str, str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    # caller, party type, country, purpose, action, categories, lawful basis
    ("svc:crm", "internal", "GB", "relationship.management", "read", ("identity", "contact"),
     ("contract",)),
    ("svc:crm", "internal", "GB", "relationship.management", "update", ("contact",),
     ("contract",)),
    ("svc:billing", "internal", "GB", "order.processing", "read", ("identity", "payment"),
     ("contract", "legal_obligation")),
    ("svc:marketing", "internal", "GB", "marketing", "read", ("contact",),
     ("consent",)),
    ("grp:exalens-nl", "group", "NL", "business.administration", "read", ("identity",),
     ("legitimate_interests",)),
    ("grp:exalens-in", "group", "IN", "business.administration", "read", ("identity",),
     ("legitimate_interests",)),
    ("proc:mailer", "processor", "US", "marketing", "read", ("contact",), ("consent",)),
    ("svc:analytics", "internal", "GB", "analytics.improvement", "read", ("usage",),
     ("legitimate_interests",)),
)
"""What the customer's data is used for, by whom; each decision is one of these."""

START = datetime(2023, 1, 2, tzinfo=UTC)
SPAN = timedelta(days=3 * 365)


def subject_decisions(pseudonym: str, n: int, *, distinct: bool = False) -> list[AuditEvent]:
    """``n`` decisions about ``pseudonym`` over three years, oldest first.

    One in seven is refused (``category_not_granted``, answered 403), the rest
    allowed (200). With ``distinct`` every decision has a caller of its own, so no
    two are alike (the PDF's worst case).

    Args:
        pseudonym: The subject's pseudonym, as the trail stores it.
        n: How many decisions.
        distinct: Make every decision unlike every other.
    """
    out = []
    for i in range(n):
        caller, party, country, purpose, action, categories, basis = ACCESSES[i % len(ACCESSES)]
        if distinct:
            caller = f"svc:team{i}"
        allowed = i % 7 != 3
        when = START + SPAN * i / max(n, 1)
        out.append(AuditEvent(
            event_id=f"{i:08x}-0000-7000-8000-{n:012x}", kind=EventKind.DECISION,
            ts=when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), caller=caller, party_type=party,
            country=country, purpose=purpose, categories=categories, action=action,
            allowed=allowed, reason="allowed" if allowed else "category_not_granted",
            rule=("rules.csv:1",) if allowed else ("check:category_not_granted",),
            lawful_basis=basis if allowed else (), policy_version="sha256:test",
            subject=pseudonym, http_method="GET", http_route="/customers/{customer_id}",
            http_status=200 if allowed else 403, latency_us=40,
            writer_id=f"bulk-{n}", seq=i + 1))
    return out


def write_decisions(store: Store, events: list[AuditEvent]) -> None:
    """Commit ``events`` to ``store`` (numbered but unchained, as a bulk load would)."""
    for at in range(0, len(events), 5_000):
        seed(store, [row_of(e) for e in events[at:at + 5_000]])
