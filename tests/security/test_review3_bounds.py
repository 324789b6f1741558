"""Third review: no audit record is too large for the journal's readers.

The journal's readers take a frame whose length is over ``MAX_FRAME`` (16 MiB)
for damage, but nothing bounded what was written: a policy whose error names a
huge value (``unknown policy type 'xxxx…'`` with 20 MB of it, from a policy
file or a row of the PostgreSQL policy store) was recorded whole as a
``policy_rejected`` event. That record was acknowledged, then the index stopped
at it for good (no later event ever queryable), and the next start refused the
journal (a bad frame below its durable end): one bad policy row took every
replica's trail down. A policy event's ``detail`` is now cut to a bound, and the
journal refuses a record its readers would not read instead of writing it
(the batch fails closed, the chain goes on after the last good one).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opskit import POLICIES
from sidecarkit import policy_copy

from guard._errors import AuditUnavailableError
from guard._guard import Guard
from guard._types import Request
from guard.audit import open_store
from guard.audit._event import EventKind, policy_fields
from guard.audit._journal import MAX_FRAME, Journal, durable_end, scan, segments
from guard.config import AuditSettings, PolicySettings, Settings
from guard.policy._load import PolicyLoadError, load_policy
from tests.security.audit_tamper_kit import cli_verify, make_keys, trail

FIELDS = {"caller": "svc:crm", "purpose": "relationship.management", "categories": ("contact",),
          "action": "read", "allowed": True, "reason": "allowed", "subject_id": "cust-1"}


def test_a_policy_error_naming_a_huge_value_leaves_the_journal_readable(tmp_path: Path) -> None:
    policy = policy_copy(tmp_path / "policy", POLICIES)
    settings = Settings(
        policy=PolicySettings(dir=policy, watch=False),
        audit=AuditSettings(store=f"sqlite:///{tmp_path / 'audit.db'}",
                            hmac_key=tmp_path / "hmac.key", signing_key=tmp_path / "signing.key"),
    )
    guard = Guard.from_settings(settings)
    lane = guard.trail.journal.folder
    try:
        rules = policy / "rules.csv"
        rules.write_text(rules.read_text() + "x" * (20 << 20) + "\n")
        result = guard.holder.reload()
        assert not result.ok
        assert result.error is not None
        after = guard.check(Request("svc:crm", "relationship.management", ("contact.email",)))
        assert after.decision.allowed
        assert after.decision_id
        guard.trail.flush()  # every event in the index, the one after the rejection too
        [(detail,)] = guard.trail.store.rows(
            "SELECT detail FROM audit_event WHERE kind = 'policy_rejected'")
    finally:
        guard.close()
    assert detail.startswith(f"{rules}:")  # the rejection is recorded, short
    assert len(detail) <= 4096
    [(first, segment)] = segments(lane)
    _payloads, _good, damage = scan(segment, first)
    assert damage is None
    Journal(lane).close()  # opens again


def test_the_journal_refuses_a_record_its_readers_would_not_read(tmp_path: Path) -> None:
    lane = tmp_path / "lane-0"
    journal = Journal(lane)
    try:
        journal.append([b'{"n":1}'])
        with pytest.raises(AuditUnavailableError):
            journal.append([b'{"n":2}', b"x" * (MAX_FRAME + 1)])
        journal.append([b'{"n":3}'])  # the refused batch left nothing behind
    finally:
        journal.close()
    [(first, segment)] = segments(lane)
    payloads, _good, damage = scan(segment, first)
    assert (payloads, damage) == ([b'{"n":1}', b'{"n":3}'], None)
    assert durable_end(lane) == 2
    Journal(lane).close()


def test_a_record_too_large_is_refused_and_the_chain_goes_on(tmp_path: Path) -> None:
    """Through the writer: the oversized event is refused, the next is durable, verify intact."""
    keys = make_keys(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    folder = tmp_path / "journal"
    with trail(url, keys, journal=folder, checkpoint_every=4) as audit:
        audit.record_fields(EventKind.DECISION, FIELDS)
        with pytest.raises(AuditUnavailableError):
            audit.record_fields(EventKind.POLICY_REJECTED,
                                {"policy_version": "v", "detail": "x" * (MAX_FRAME + 1)})
        after = [audit.record_fields(EventKind.DECISION, FIELDS) for _ in range(5)]
        audit.flush()
    done = cli_verify(url, keys, tmp_path, "--journal", str(folder))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact: 6 event(s)" in done.stdout
    store = open_store(url, create=False)
    try:
        assert all(store.rows("SELECT 1 FROM audit_event WHERE event_id = ?", (i,)) for i in after)
    finally:
        store.close()


def test_only_the_record_too_large_is_refused_from_its_batch(tmp_path: Path) -> None:
    """The events around it in one batch are written (the request that made it alone fails)."""
    keys = make_keys(tmp_path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    huge = {"policy_version": "v", "detail": "x" * (MAX_FRAME + 1)}
    with trail(url, keys, journal=tmp_path / "journal") as audit:
        ids = audit.record_many_fields(EventKind.DECISION, [FIELDS, huge, FIELDS])
    assert ids[1] is None
    assert ids[0] is not None
    assert ids[2] is not None


@pytest.mark.parametrize("row", ["{big}", "g2, {big}, relationship", "g, contact.{big}, x"])
def test_a_policy_error_naming_a_huge_value_is_short_wherever_it_is_shown(
    tmp_path: Path, row: str
) -> None:
    """The reload error (in /readyz, the logs, the event) says where, not the whole value."""
    policy = policy_copy(tmp_path / "policy", POLICIES)
    rules = policy / "rules.csv"
    rules.write_text(rules.read_text() + row.format(big="y" * (4 << 20)) + "\n")
    with pytest.raises(PolicyLoadError) as refused:
        load_policy(policy)
    text = str(refused.value)
    assert text.startswith(f"{rules}:")
    assert len(text) < 2000


def test_a_policy_event_detail_is_cut_to_its_bound() -> None:
    """Whatever a policy event is told (a reload error from any source), it stays small."""
    fields = policy_fields(EventKind.POLICY_REJECTED, "v", "x" * (20 << 20))
    assert len(fields["detail"]) == 4096  # audit._event.MAX_POLICY_DETAIL
    assert fields["detail"].endswith("…")
