"""Hot reload under load: a good policy switches decisions, a broken one is rejected."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sidecarkit import audit_rows, policy_copy, poll, serve_sidecar, sidecar_settings, version_of

from guard.policy import load_policy

POLICIES = Path(__file__).resolve().parents[3] / "policies"
GRANT = "p, svc:crm, relationship.management, contact, read\n"
ASK = {"purpose": "relationship.management", "categories": ["contact.email"]}
MAX_REQUESTS = 4000  # per load thread: the loop is bounded even if the test stalls


@dataclass
class Load:
    """A bounded load loop against /v1/decide, recording every answer or failure."""

    url: str
    token: str
    stop: threading.Event = field(default_factory=threading.Event)
    answers: list[tuple[int, bool, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        headers = {"authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            for _ in range(MAX_REQUESTS):
                if self.stop.is_set():
                    return
                try:
                    resp = client.post("/v1/decide", json=ASK)
                    body = resp.json()
                    answer = (
                        resp.status_code,
                        body["decision"]["allowed"],
                        body["decision"]["policy_version"],
                    )
                except Exception as exc:  # a failed request is what this test must never see
                    with self.lock:
                        self.failures.append(repr(exc))
                    continue
                with self.lock:
                    self.answers.append(answer)

    def count(self, version: str) -> int:
        with self.lock:
            return sum(1 for _, _, v in self.answers if v == version)


def _replace(path: Path, text: str) -> None:
    """Replace a file atomically, as a deploy would."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_reload_under_load_switches_and_rejects_without_failing_a_request(
    tmp_path: Path, keys: Any
) -> None:
    policy = policy_copy(tmp_path / "policy", POLICIES)
    rules = policy / "rules.csv"
    original = rules.read_text()
    assert GRANT in original
    good = original.replace(GRANT, "")
    broken = good + "p, svc:crm, relationship.management\n"
    old_version = load_policy(policy).version
    settings = sidecar_settings(
        tmp_path, policy, keys.identity(), watch=True, reload_debounce_ms=20
    )
    with serve_sidecar(settings) as server:
        load = Load(server.url, keys.mint("hs", sub="svc:crm"))
        threads = [threading.Thread(target=load.run) for _ in range(3)]
        for thread in threads:
            thread.start()
        try:
            poll(lambda: load.count(old_version) >= 30)
            _replace(rules, good)
            new_version = poll(
                lambda: (v := version_of(server.url)) != old_version and v, timeout=15
            )
            poll(lambda: load.count(new_version) >= 30)
            _replace(rules, broken)
            ready = poll(
                lambda: (r := httpx.get(f"{server.url}/readyz").json())["last_reload_error"] and r,
                timeout=15,
            )
            seen = load.count(new_version)
            poll(lambda: load.count(new_version) >= seen + 30)
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(timeout=30)

    assert load.failures == []
    assert {status for status, _, _ in load.answers} == {200}
    # Every answer came whole from one policy: the old one allowed, the new one denies.
    assert {(allowed, version) for _, allowed, version in load.answers} == {
        (True, old_version),
        (False, new_version),
    }
    assert ready["policy_version"] == new_version
    assert "wrong-arity" in ready["last_reload_error"]
    assert ready["status"] == "ready"

    events = audit_rows(tmp_path / "audit.db", "kind LIKE 'policy_%'")
    kinds = [(e["kind"], e["policy_version"]) for e in events]
    assert kinds[0] == ("policy_loaded", old_version)
    assert ("policy_loaded", new_version) in kinds
    rejected = [e for e in events if e["kind"] == "policy_rejected"]
    assert rejected
    assert rejected[-1]["policy_version"] == new_version
    assert "wrong-arity" in rejected[-1]["detail"]
