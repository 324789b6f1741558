"""The planner's memo of a repeated read never outlives what it was found under.

A read asked again with the same route answer, ``Authorization`` value and purpose value
is judged from what the planner kept for it (the caller, the request, the decision and
its outcome: ``Planner.seen``) and what the guard kept with the request
(``Guard.decide_asked``). These tests hold that memo to the interpreted path
(``enforce()``) and to casbin's own Enforcer while the token expires, the verification
keys change, the policy in force changes back and forth and the subject register gains
a restriction: after each, the very next request is judged afresh. A path keeps an entry
for each of up to ``CALLERS`` tokens, so callers taking turns on it each keep theirs, and
no token is ever judged from another's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import casbin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.trace import INVALID_SPAN
from tokenkit import Keys, guard_settings

from examples.customers import create_app
from guard._guard import Guard
from guard.policy import CompiledPolicy, PolicySource, compile_source
from guard.rights import EntryKind, Record
from middleware import GuardMiddleware, _plan
from middleware import identity as identity_module
from middleware._enforce import Outcome
from middleware._router import Resolved

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MODEL = POLICIES / "model.conf"
SHIPPED_RULES = (POLICIES / "rules.csv").read_text()
REVOKED_RULES = "\n".join(line for line in SHIPPED_RULES.splitlines()
                          if not line.startswith("p, svc:crm, relationship.management, contact"))
"""The shipped rules without svc:crm's grant of ``contact`` for relationship management."""
PURPOSES = (b"relationship.management", b"marketing.advertising")


def _compiled(rules: str) -> CompiledPolicy:
    return compile_source(PolicySource(MODEL.read_text(), rules, str(MODEL), "rules.csv"))


def _enforcer(rules: str) -> casbin.Enforcer:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.csv"
        path.write_text(rules)
        return casbin.Enforcer(str(MODEL), str(path))


class _Clock:
    """``time`` as the authenticator reads it, ``ahead`` seconds ahead of the real one."""

    ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def world(tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[dict[str, Any]]:
    clock = _Clock()
    monkeypatch.setattr(identity_module, "time", clock)
    jwks = tmp_path / "jwks.json"  # the test's own: a test may take a key out of it
    jwks.write_bytes(keys.jwks_file.read_bytes())
    settings = guard_settings(tmp_path, keys, jwks_file=jwks)
    with Guard.from_settings(settings) as guard:
        mw = GuardMiddleware(create_app(settings, enforce=False), guard=guard,
                             settings=settings)
        mw.resolve({"type": "http", "method": "GET", "path": "/", "root_path": "",
                    "headers": []})  # walks the app's routes
        now = int(time.time())
        tokens = {"crm": keys.mint("ec", sub="svc:crm", exp=now + 600),
                  "crm-limited": keys.mint("ed", sub="svc:crm", exp=now + 600,
                                           purposes=["relationship.management"]),
                  "marketing": keys.mint("rsa", sub="svc:marketing", exp=now + 600),
                  "crm-soon": keys.mint("ec", sub="svc:crm", exp=now + 100),
                  "marketing-2": keys.mint("ed", sub="svc:marketing", exp=now + 601),
                  "crm-limited-2": keys.mint("rsa", sub="svc:crm", exp=now + 602,
                                             purposes=["relationship.management"])}
        yield {"mw": mw, "guard": guard, "tokens": tokens, "clock": clock, "jwks": jwks}


def _scope(path: str, token: str, purpose: bytes) -> dict[str, Any]:
    headers = [(b"host", b"svc"), (b"authorization", f"Bearer {token}".encode()),
               (b"x-purpose", purpose)]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000)}


def _same(planned: Outcome | None, interpreted: Outcome) -> bool:
    """The planner's outcome is the interpreted path's (a refusal's event id apart), or none."""
    return planned is None or dataclasses.replace(planned, decision_id=None) == (
        dataclasses.replace(interpreted, decision_id=None))


async def _ask(world: dict[str, Any], path: str, token: str, purpose: bytes
               ) -> tuple[Outcome | None, Outcome]:
    """The planner's outcome (None: not planned) and the interpreted path's, for one read."""
    mw: GuardMiddleware = world["mw"]
    judged = mw._planner.judge(_scope(path, token, purpose), "GET", INVALID_SPAN)
    planned: Outcome | None = None
    if isinstance(judged, tuple):
        planned = judged[0]
    elif judged is not None and not isinstance(judged, Resolved):
        planned = await judged
    interpreted, _ruling = await mw._judge(_scope(path, token, purpose), "http", "GET")
    return planned, interpreted


def test_a_kept_caller_is_not_used_once_its_token_expired(world: dict[str, Any]) -> None:
    token = world["tokens"]["crm"]

    async def run() -> tuple[Outcome | None, Outcome]:
        for _ in range(3):  # the second and third from the memo
            planned, interpreted = await _ask(world, "/customers/c-0001", token, PURPOSES[0])
        assert planned is not None
        assert planned.allowed
        assert planned == interpreted
        world["clock"].ahead = 600 + 31.0  # past exp and the leeway
        return await _ask(world, "/customers/c-0001", token, PURPOSES[0])

    planned, interpreted = asyncio.run(run())
    assert planned is None  # not planned: the interpreted path refuses it
    assert interpreted.status == 401


def test_a_kept_caller_is_not_used_once_the_keys_changed(world: dict[str, Any]) -> None:
    token = world["tokens"]["crm"]
    mw: GuardMiddleware = world["mw"]

    async def run() -> tuple[Outcome | None, Outcome]:
        for _ in range(3):
            planned, _interpreted = await _ask(world, "/customers/c-0001", token, PURPOSES[0])
        assert planned is not None
        assert planned.allowed
        mw.auth._set_keys([])  # the key files changed: no token verifies
        return await _ask(world, "/customers/c-0001", token, PURPOSES[0])

    planned, interpreted = asyncio.run(run())
    assert planned is None
    assert interpreted.status == 401


def test_a_kept_caller_is_not_used_once_the_key_files_are_due(world: dict[str, Any]) -> None:
    """The key files are looked at when due, a kept caller or not: a key taken out of the
    JWKS file stops its tokens at that look, on a repeated read too."""
    token = world["tokens"]["crm"]  # ES256, signed with the key "ec-1"
    mw: GuardMiddleware = world["mw"]
    jwks: Path = world["jwks"]

    async def ask() -> tuple[Outcome | None, Outcome]:
        return await _ask(world, "/customers/c-0001", token, PURPOSES[0])

    for _ in range(3):  # the second and third from the memo
        planned, _interpreted = asyncio.run(ask())
    assert planned is not None
    assert planned.allowed
    data = json.loads(jwks.read_text())
    data["keys"] = [key for key in data["keys"] if key["kid"] != "ec-1"]
    jwks.write_text(json.dumps(data))
    files = mw.auth._files
    assert files is not None
    files.next_poll = files.clock()  # the refresh interval is over
    planned, interpreted = asyncio.run(ask())
    assert planned is None
    assert interpreted.status == 401


def test_a_kept_read_is_judged_afresh_once_its_subject_has_an_entry(
        world: dict[str, Any]) -> None:
    token = world["tokens"]["crm"]
    register = world["guard"].register
    assert register is not None

    async def ask() -> tuple[Outcome | None, Outcome]:
        return await _ask(world, "/customers/c-0002", token, PURPOSES[0])

    for _ in range(3):  # the second and third from the memo
        planned, _interpreted = asyncio.run(ask())
    assert planned is not None
    assert planned.allowed
    register.apply(register.pseudonym("c-0002"),
                   [Record(EntryKind.RESTRICTION, "", date(2020, 1, 1))])
    planned, interpreted = asyncio.run(ask())
    assert not interpreted.allowed
    assert planned is not None
    assert _same(planned, interpreted)


def test_another_token_on_a_kept_read_is_its_own_caller(world: dict[str, Any]) -> None:
    tokens = world["tokens"]

    async def run() -> None:
        seen: set[str] = set()
        for name in ("crm", "crm", "marketing", "marketing", "crm", "marketing"):
            planned, interpreted = await _ask(world, "/customers/c-0001", tokens[name],
                                              PURPOSES[0])
            assert interpreted.caller is not None
            assert interpreted.caller.id == "svc:" + name
            if name in seen:  # a token verified before: the planner answers, as its caller
                assert planned is not None
            assert _same(planned, interpreted)
            seen.add(name)

    asyncio.run(run())


def _entries(world: dict[str, Any], subject: str, purpose: bytes) -> list[Any]:
    """The planner's entries for a customer's path and ``purpose``."""
    planner = world["mw"]._planner
    for (answer, value), entries in planner.seen.items():
        if answer.subject == subject and value == purpose:
            return entries
    return []


def test_callers_taking_turns_on_a_path_each_keep_their_entry(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rounds of three tokens on one path: the second round is judged from the memo
    (no token looked up again), each read as its own token's caller."""
    tokens = world["tokens"]
    names = ("crm", "marketing", "crm-limited")
    looked_up: list[bytes | None] = []
    known = identity_module.Authenticator.known

    def counted(self: Any, authorization: bytes | None, headers: Any) -> Any:
        looked_up.append(authorization)
        return known(self, authorization, headers)

    async def run() -> None:
        for _ in range(2):  # the path's first read keeps nothing
            for name in names:
                await _ask(world, "/customers/c-0003", tokens[name], PURPOSES[0])
        monkeypatch.setattr(identity_module.Authenticator, "known", counted)
        for _ in range(2):
            for name in names:
                planned, interpreted = await _ask(world, "/customers/c-0003", tokens[name],
                                                  PURPOSES[0])
                assert planned is not None
                assert planned.allowed == (name != "marketing")
                assert planned.caller is not None
                assert planned.caller.id == interpreted.caller.id == (  # type: ignore[union-attr]
                    "svc:marketing" if name == "marketing" else "svc:crm")
                assert _same(planned, interpreted)

    asyncio.run(run())
    assert looked_up == []  # by the planner: every read of the last two rounds from its entry
    assert len(_entries(world, "c-0003", PURPOSES[0])) == 3


def test_a_path_keeps_at_most_callers_entries_and_the_memo_at_most_requests(
        world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_plan, "REQUESTS", 6)
    tokens = list(world["tokens"].values())
    assert len(tokens) > _plan.CALLERS
    planner = world["mw"]._planner

    async def run() -> None:
        for path in ("/customers/c-0004", "/customers/c-0005", "/customers/c-0006"):
            for _ in range(3):
                for token in tokens:
                    await _ask(world, path, token, PURPOSES[0])
                    counted = sum(len(entries) for entries in planner.seen.values())
                    assert counted == planner.kept <= 6
                    assert all(len(entries) <= _plan.CALLERS
                               for entries in planner.seen.values())
                    assert all(len({e.authorization for e in entries}) == len(entries)
                               for entries in planner.seen.values())

    asyncio.run(run())


def test_a_token_verified_again_under_new_keys_takes_its_own_entrys_place(
        world: dict[str, Any]) -> None:
    """The keys put in force again (a key file reloaded): each token is verified anew, and
    its entry replaced, not kept twice beside the stale one."""
    tokens = world["tokens"]
    auth = world["mw"].auth

    async def run() -> None:
        for _ in range(3):
            for name in ("crm", "marketing"):
                await _ask(world, "/customers/c-0008", tokens[name], PURPOSES[0])
        assert len(_entries(world, "c-0008", PURPOSES[0])) == 2
        auth._set_keys([key for keys in auth._by_alg.values() for key in keys])
        for round_ in range(3):  # the first verified by enforce(), the others planned
            for name in ("crm", "marketing"):
                planned, interpreted = await _ask(world, "/customers/c-0008", tokens[name],
                                                  PURPOSES[0])
                assert (planned is None) == (round_ == 0)
                assert _same(planned, interpreted)
        entries = _entries(world, "c-0008", PURPOSES[0])
        assert len(entries) == 2
        assert all(entry.keys_set == auth.keys_set for entry in entries)

    asyncio.run(run())


def test_an_expired_token_is_refused_while_another_on_the_path_is_kept(
        world: dict[str, Any]) -> None:
    tokens = world["tokens"]

    async def run() -> None:
        for _ in range(3):  # the second and third round from the memo
            for name in ("crm-soon", "crm"):
                planned, _interpreted = await _ask(world, "/customers/c-0007", tokens[name],
                                                   PURPOSES[0])
        assert planned is not None
        assert planned.allowed
        assert len(_entries(world, "c-0007", PURPOSES[0])) == 2
        world["clock"].ahead = 100 + 31.0  # past crm-soon's exp and the leeway, not crm's
        for _ in range(2):
            planned, interpreted = await _ask(world, "/customers/c-0007", tokens["crm-soon"],
                                              PURPOSES[0])
            assert planned is None
            assert interpreted.status == 401
            planned, interpreted = await _ask(world, "/customers/c-0007", tokens["crm"],
                                              PURPOSES[0])
            assert planned is not None
            assert planned.allowed
            assert _same(planned, interpreted)

    asyncio.run(run())


_RUNS = itertools.count()
"""Each example's subjects are its own (the register keeps the restrictions made before)."""
_STEPS = st.lists(st.one_of(
    st.tuples(st.just("ask"), st.sampled_from(["crm", "crm-limited", "marketing"]),
              st.sampled_from(PURPOSES), st.integers(0, 1)),
    st.tuples(st.just("policy"), st.sampled_from([0, 1])),
    st.tuples(st.just("restrict"), st.integers(0, 1)),
), min_size=1, max_size=14)


def _judged_as_enforce(world: dict[str, Any], steps: list[tuple[Any, ...]], asks: int) -> None:
    """Run ``steps`` (reads, policy changes, register restrictions) on two subjects never
    restricted before, each read asked ``asks`` times: every read, planned or not, is judged
    as enforce() and casbin judge its own token's caller and leave."""
    guard: Guard = world["guard"]
    rules = (SHIPPED_RULES, REVOKED_RULES)
    compiled = [_compiled(r) for r in rules]
    enforcers = [_enforcer(r) for r in rules]
    run = next(_RUNS)
    subjects = [f"c-{run}-{n}" for n in range(2)]
    restricted: set[str] = set()
    in_force = 0
    register = guard.register
    assert register is not None

    async def steps_run() -> None:
        nonlocal in_force
        for step in steps:
            if step[0] == "policy":
                in_force = step[1]
                guard.holder.reload(lambda policy=compiled[in_force]: policy)
                continue
            if step[0] == "restrict":
                subject = subjects[step[1]]
                register.apply(register.pseudonym(subject), [
                    Record(EntryKind.RESTRICTION, "", date(2020, 1, 1))])
                restricted.add(subject)
                continue
            _, name, purpose, which = step
            subject = subjects[which]
            caller = "svc:crm" if name.startswith("crm") else "svc:marketing"
            granted = all(enforcers[in_force].enforce(caller, purpose.decode(), category,
                                                      "read")
                          for category in ("identity", "contact"))
            may = not name.startswith("crm-limited") or purpose == PURPOSES[0]
            expected = granted and may and subject not in restricted
            for _ in range(asks):
                planned, interpreted = await _ask(world, "/customers/" + subject,
                                                  world["tokens"][name], purpose)
                assert _same(planned, interpreted), (step, planned, interpreted)
                assert interpreted.allowed == expected, (step, in_force, interpreted)
                assert interpreted.caller is not None
                assert interpreted.caller.id == caller
                if planned is not None:
                    assert planned.allowed == expected, (step, in_force, planned)
                    assert planned.caller is not None
                    assert planned.caller.id == caller, (step, planned)
                    assert planned.decision is not None
                    assert planned.decision.policy_version == compiled[in_force].version

    try:
        asyncio.run(steps_run())
    finally:
        guard.holder.reload(lambda: compiled[0])


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=_STEPS)
def test_a_kept_read_is_judged_as_enforce_and_casbin_judge_it(
        world: dict[str, Any], steps: list[tuple[Any, ...]]) -> None:
    """Over random reads, policy changes and register restrictions, each read asked twice."""
    _judged_as_enforce(world, steps, asks=2)


_TOKENS = ("crm", "crm-limited", "marketing", "marketing-2", "crm-limited-2")
"""More tokens than a path keeps entries for (``CALLERS``), of the same callers with
different leave to declare purposes."""
_TURNS = st.lists(st.one_of(
    st.tuples(st.just("ask"), st.sampled_from(_TOKENS), st.sampled_from(PURPOSES),
              st.integers(0, 1)),
    st.tuples(st.just("policy"), st.sampled_from([0, 1])),
    st.tuples(st.just("restrict"), st.integers(0, 1)),
), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(steps=_TURNS)
def test_callers_taking_turns_are_each_judged_as_their_own_token(
        world: dict[str, Any], steps: list[tuple[Any, ...]]) -> None:
    """Over random interleavings of five tokens on two paths (each read asked once, so that
    a read follows another token's on its path), policy changes and register restrictions:
    each read is judged as enforce() and casbin judge its own token's caller and leave."""
    _judged_as_enforce(world, steps, asks=1)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_kept_entry_is_never_used_for_a_value_one_byte_off(
        world: dict[str, Any], data: st.DataObject) -> None:
    """An ``Authorization`` value one byte off a kept one, at any position (the scheme, the
    token's header, claims or signature), is never judged from the kept entry: the planner
    leaves it to the interpreted path, and still answers the kept value from its entry.
    How long the compare takes, and whether that depends on where the values differ, is
    not something a unit test can hold (docs/security.md, the twelfth and thirteenth
    reviews); this holds what it decides."""
    planner = world["mw"]._planner
    path = "/customers/c-0007"
    tokens = world["tokens"]
    kept = f"Bearer {tokens['crm']}".encode()
    at = data.draw(st.integers(0, len(kept) - 1), label="at")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != kept[at]), label="byte")
    off = kept[:at] + bytes([byte]) + kept[at + 1:]

    async def run() -> Any:
        for _ in range(2):  # an entry for each of two tokens on the path
            for name in ("marketing", "crm"):
                await _ask(world, path, tokens[name], PURPOSES[0])
        scope = _scope(path, tokens["crm"], PURPOSES[0])
        scope["headers"][1] = (b"authorization", off)
        assert planner.judge(scope, "GET", INVALID_SPAN) is None
        return planner.judge(_scope(path, tokens["crm"], PURPOSES[0]), "GET", INVALID_SPAN)

    judged = asyncio.run(run())
    assert isinstance(judged, tuple)  # the kept value itself: from its entry
    assert judged[0].caller is not None
    assert judged[0].caller.id == "svc:crm"
