"""Ninth review: refusals of requests that prove no caller cannot fill the audit disk.

Every refused request was an event, whoever sent it: a client with no credentials,
sending as fast as the guard answered, filled the audit filesystem down to
``audit.reserve_mb``, and from then on the guard refused every request
``audit_unavailable`` (fail closed): a denial of service by anyone who can reach the
port. Refusals that carry no verified caller are now recorded one by one up to a
bound per source and reason in each window (and of all sources together), and the rest
are counted in one ``refusals`` event per window. A verified caller's decisions and
every allowed one are recorded one by one as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opskit import fill_disk
from sidecarkit import ServerThread, free_port, policy_copy, sidecar_settings

from guard._refusals import RefusalBudget, source_of
from guard.audit import wait_indexed
from guard.audit._journal import GROW
from guard.config import Settings
from middleware.sidecar import create_app

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CRM = {"x-purpose": "relationship.management"}
RESERVE_MB = 4


def _settings(tmp: Path, keys: Any, **audit: Any) -> Settings:
    settings = sidecar_settings(tmp, policy_copy(tmp / "policy", POLICIES), keys.identity())
    return settings.model_copy(update={"audit": settings.audit.model_copy(update=audit)})


def _rows(settings: Settings, where: str = "1=1") -> list[dict[str, Any]]:
    wait_indexed(settings.audit)
    db = settings.audit.store.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(f"SELECT * FROM audit_event WHERE {where}")]


def _check(client: httpx.Client, path: str, headers: dict[str, str] | None = None
           ) -> httpx.Response:
    return client.get("/v1/check" + path, headers=headers or {})


def test_a_flood_without_credentials_never_takes_the_guard_down(
    tmp_path: Path, small_disk: Path, keys: Any,
) -> None:
    settings = _settings(tmp_path, keys, journal=small_disk / "journal", reserve_mb=RESERVE_MB)
    crm = {**CRM, "authorization": f"Bearer {keys.mint('hs', sub='svc:crm')}"}
    with ServerThread(create_app(settings), free_port()) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        assert _check(client, "/customers/c-0001", crm).status_code == 200
        # 100 kB above what the guard keeps free: about a thousand refusal events.
        fill_disk(small_disk, leave=RESERVE_MB * 1_000_000 + GROW + 100_000)
        for n in range(3000):
            assert _check(client, f"/customers/c-{n:04d}").status_code == 401
        allowed = _check(client, "/customers/c-0001", crm)
        # Before: 403 audit_unavailable, for every caller, until an operator freed space.
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["x-guard-decision-id"]
    summaries = _rows(settings, "kind = 'refusals'")
    recorded = _rows(settings, "kind = 'decision' AND caller = '' AND reason = 'unauthenticated'")
    counted = sum(json.loads(row["detail"])["counted"] for row in summaries)
    assert len(recorded) + counted == 3000


def test_every_refusal_is_recorded_or_counted_and_callers_are_recorded_one_by_one(
    tmp_path: Path, keys: Any,
) -> None:
    settings = _settings(tmp_path, keys, anonymous_refusals_per_source=5,
                         anonymous_refusals_per_window=50,
                         anonymous_refusals_window_seconds=3600)
    crm = {**CRM, "authorization": f"Bearer {keys.mint('hs', sub='svc:crm')}"}
    analytics = {"x-purpose": "analytics.improvement",
                 "authorization": f"Bearer {keys.mint('hs', sub='svc:analytics')}"}
    ids: list[str] = []
    with ServerThread(create_app(settings), free_port()) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        for n in range(40):  # no token, two routes
            path = f"/customers/c-{n:04d}" if n % 2 else f"/echo/n{n}"
            assert _check(client, path).status_code == 401
        for _ in range(10):  # no token and a purpose over its bound: malformed
            answer = _check(client, "/customers/c-0001", {"x-purpose": "p" * 500})
            assert answer.json()["reason"] == "malformed_request"
        for n in range(30):  # a verified caller refused, then allowed: each recorded
            denied = _check(client, f"/customers/c-{n:04d}", analytics)
            allowed = _check(client, f"/customers/c-{n:04d}", crm)
            assert (denied.status_code, allowed.status_code) == (403, 200)
            ids += [denied.headers["x-guard-decision-id"], allowed.headers["x-guard-decision-id"]]
        bad_token = {**CRM, "authorization": "Bearer not.a.token"}
        assert _check(client, "/customers/c-0001", bad_token).status_code == 401
    # The sidecar has stopped: its window's count was recorded as it closed.
    anonymous = _rows(settings, "kind = 'decision' AND caller = ''")
    assert sorted(row["reason"] for row in anonymous) == (
        ["malformed_request"] * 5 + ["unauthenticated"] * 5)
    summaries = _rows(settings, "kind = 'refusals'")
    assert len(summaries) == 1
    summary = json.loads(summaries[0]["detail"])
    assert summary["recorded"] == 10
    assert summary["counted"] == 41  # 40 + 10 + 1, less the 10 recorded
    by = {(e["source"], e["reason"], e["route"]): e["count"] for e in summary["by"]}
    assert by == {("127.0.0.1", "unauthenticated", "/customers/{customer_id}"): 19,
                  ("127.0.0.1", "unauthenticated", "/echo/{name}"): 17,
                  ("127.0.0.1", "malformed_request", "/customers/{customer_id}"): 5}
    callers = _rows(settings, "kind = 'decision' AND caller != ''")
    assert sorted(row["event_id"] for row in callers) == sorted(ids)


def test_a_counted_refusal_writes_no_log_line_either(
    tmp_path: Path, keys: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    # The audit's bound is worth little if each refusal past it still writes a log line
    # (the service's log is on a disk too): only those recorded one by one are logged.
    settings = _settings(tmp_path, keys, anonymous_refusals_per_source=3,
                         anonymous_refusals_window_seconds=3600)
    caplog.set_level(logging.INFO, logger="guard.middleware")
    with ServerThread(create_app(settings), free_port()) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        for n in range(40):
            assert _check(client, f"/customers/c-{n:04d}").status_code == 401
    logged = [r for r in caplog.records if r.getMessage().startswith("unauthenticated ")]
    assert len(logged) == 3, [r.getMessage() for r in logged]


def test_a_windows_count_is_recorded_at_its_end_without_more_traffic(
    tmp_path: Path, keys: Any,
) -> None:
    settings = _settings(tmp_path, keys, anonymous_refusals_per_source=2,
                         anonymous_refusals_window_seconds=1)
    with ServerThread(create_app(settings), free_port()) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        for n in range(12):
            _check(client, f"/customers/c-{n:04d}")
        counted = 0
        deadline = time.monotonic() + 60
        while not counted and time.monotonic() < deadline:  # the window ends within a second
            time.sleep(0.05)
            counted = sum(json.loads(row["detail"])["counted"]
                          for row in _rows(settings, "kind = 'refusals'"))
        recorded = _rows(settings, "kind = 'decision' AND caller = ''")
        assert counted, "no count recorded at the window's end"
        assert len(recorded) + counted == 12, (len(recorded), counted)


_SOURCES = st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2",
                            "2001:db8:0:1::1", "::ffff:192.0.2.1", None, "unix"])
_EVENTS = st.lists(st.tuples(_SOURCES, st.sampled_from(["unauthenticated", "malformed_request"]),
                             st.sampled_from(["/a/{id}", "<refused>"]),
                             st.floats(min_value=0, max_value=3)), max_size=300)


@settings(max_examples=200, deadline=None)
@given(events=_EVENTS, per_source=st.integers(1, 5), per_window=st.integers(1, 20))
def test_every_refusal_is_recorded_once_or_counted_once(
    events: list[tuple[str | None, str, str, float]], per_source: int, per_window: int,
) -> None:
    now = [0.0]
    summaries: list[dict[str, Any]] = []
    budget = RefusalBudget(per_source, per_window, 10.0, summaries.append, clock=lambda: now[0])
    recorded = 0
    for source, reason, route, step in events:
        now[0] += step
        recorded += budget.admit(source_of(source), reason, route)
    budget.flush()
    counted = [json.loads(s["detail"]) for s in summaries]
    assert recorded + sum(c["counted"] for c in counted) == len(events)
    for c in counted:
        assert c["counted"] == sum(e["count"] for e in c["by"])
        assert c["recorded"] <= per_window
    # One /64 and an IPv4-mapped address count as the address they name.
    assert source_of("2001:db8::2") == source_of("2001:db8::1") == "2001:db8::/64"
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
