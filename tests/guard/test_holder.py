"""A broken policy never yields an allow: it never loads, and a reload keeps the last good one."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from guard._errors import PolicyError
from guard._types import Reason, Request
from guard.policy import PolicyHolder, PolicyLoadError, ReloadResult, load_policy

ALLOWED = Request("svc:crm", "relationship.management", ("contact.email",))

# Each breaks rules.csv in one way; lint must refuse every one.
BREAKAGES = [
    pytest.param("p, svc:crm, relationship.management, contact\n", id="wrong-arity"),
    pytest.param("p9, svc:crm, relationship.management, contact, read\n", id="unknown-type"),
    pytest.param("p, svc:crm, relationship.management, special.health, read\n",
                 id="grant-on-special"),
    pytest.param("p, svc:analytics, analytics.improvement, identity, read\n",
                 id="grant-outside-ceiling"),
    pytest.param("p, grp:exalens-nl, legal.compliance, identity, read\n", id="party-purpose"),
    pytest.param("g5, proc:newco, XX\n", id="unknown-country"),
    pytest.param("p, svc:crm, relationship.management, contact, read\n", id="duplicate-line"),
    pytest.param("p, svc:crm, relationship.management, contact.shoe, read\n",
                 id="unknown-category"),
]


@pytest.fixture
def folder(policy_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the shipped policy folder."""
    for name in ("model.conf", "rules.csv"):
        shutil.copy(policy_dir / name, tmp_path / name)
    return tmp_path


def append(folder: Path, text: str) -> None:
    with (folder / "rules.csv").open("a") as rules:
        rules.write("\n" + text)


@pytest.mark.parametrize("broken", BREAKAGES)
def test_broken_policy_does_not_load(folder: Path, broken: str) -> None:
    append(folder, broken)
    with pytest.raises(PolicyLoadError) as caught:
        load_policy(folder)
    assert caught.value.line is not None  # it says where
    assert str(caught.value).startswith(str(folder / "rules.csv"))


@pytest.mark.parametrize("broken", BREAKAGES)
def test_holder_refuses_to_start_on_a_broken_policy(folder: Path, broken: str) -> None:
    append(folder, broken)
    with pytest.raises(PolicyLoadError):
        PolicyHolder(lambda: load_policy(folder))


@pytest.mark.parametrize("broken", BREAKAGES)
def test_reload_keeps_the_last_good_policy(folder: Path, broken: str) -> None:
    holder = PolicyHolder(lambda: load_policy(folder))
    good = holder.current.version
    assert holder.decide(ALLOWED).allowed
    seen: list[ReloadResult] = []
    holder.on_reload(seen.append)

    append(folder, broken)
    result = holder.reload()

    assert not result.ok
    assert not result.changed
    assert result.error
    assert holder.last_error == result.error
    assert holder.current.version == good
    assert seen == [result]
    decision = holder.decide(ALLOWED)
    assert decision.allowed
    assert decision.policy_version == good


def test_reload_swaps_to_a_good_new_policy(folder: Path) -> None:
    holder = PolicyHolder(lambda: load_policy(folder))
    before = holder.current.version
    # Narrow svc:crm: drop its relationship.management contact grants.
    rules = (folder / "rules.csv").read_text()
    narrowed = "\n".join(
        line for line in rules.splitlines()
        if not line.startswith("p, svc:crm, relationship.management, contact,")
    )
    (folder / "rules.csv").write_text(narrowed + "\n")
    result = holder.reload()
    assert result.ok
    assert result.changed
    assert result.previous_version == before
    assert holder.current.version == result.version != before
    decision = holder.decide(ALLOWED)
    assert decision.reason is Reason.CATEGORY_NOT_GRANTED
    assert decision.policy_version == result.version


def test_unreadable_or_missing_policy(folder: Path, tmp_path: Path) -> None:
    holder = PolicyHolder(lambda: load_policy(folder))
    (folder / "rules.csv").unlink()
    assert not holder.reload().ok
    assert holder.decide(ALLOWED).allowed
    (folder / "rules.csv").write_bytes(b"p, svc:crm, \xff\xfe\n")
    assert not holder.reload().ok
    with pytest.raises(PolicyError):
        load_policy(folder)
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "no-such-folder")


def test_broken_model_does_not_load(folder: Path) -> None:
    (folder / "model.conf").write_text("[request_definition]\nr = sub, obj\n")
    with pytest.raises(PolicyError):
        load_policy(folder)


def test_an_engine_error_is_a_denial(folder: Path) -> None:
    holder = PolicyHolder(lambda: load_policy(folder))
    # A caller that passes a plain string where the Action enum belongs.
    odd = Request("svc:crm", "relationship.management", ("contact.email",), "read")  # type: ignore[arg-type]
    decision = holder.decide(odd)
    assert not decision.allowed
    assert decision.reason is Reason.INTERNAL_ERROR


def test_decisions_during_reloads_always_come_from_a_whole_policy(folder: Path) -> None:
    """Readers racing reloads see either the old or the new version, never a mix."""
    holder = PolicyHolder(lambda: load_policy(folder))
    first = holder.current.version
    rules = (folder / "rules.csv").read_text()
    second_folder = folder / "v2"
    second_folder.mkdir()
    shutil.copy(folder / "model.conf", second_folder / "model.conf")
    (second_folder / "rules.csv").write_text(rules.replace(
        "p, svc:crm, relationship.management, contact, read\n", ""))
    second = load_policy(second_folder).version
    expected = {first: True, second: False}
    errors: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            decision = holder.decide(ALLOWED)
            if expected.get(decision.policy_version) is not decision.allowed:
                errors.append(f"{decision.policy_version} {decision.allowed}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for n in range(6):
            target = second_folder if n % 2 == 0 else folder
            assert holder.reload(lambda t=target: load_policy(t)).ok  # type: ignore[misc]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors


def test_a_holder_can_start_on_a_policy_it_was_given(folder: Path) -> None:
    """A replica that walked back to an older stored policy starts on it, not on the loader's."""
    given = load_policy(folder)
    append(folder, "p, svc:crm, relationship.management, contact, read\n")  # a broken newest
    holder = PolicyHolder(lambda: load_policy(folder), initial=given)
    assert holder.current is given
    result = holder.reload()
    assert not result.ok
    assert holder.current is given
