"""A purpose whose only basis is consent needs consent, whoever decides (twelfth review).

A policy whose model.conf the compiled engine does not recognise is decided by casbin
(the slow path, announced at load). Its register checks ran only for a subject with
entries in the register: a request naming no subject, or a subject with no entry, was
allowed as soon as the matcher allowed it. With a matcher that admits the ``consent``
basis (a model edited to list every lawful basis of POLICY-SPEC §1), ``svc:marketing``
read any customer's email for ``marketing.third_party`` with no consent recorded, while
the compiled engine answers ``consent_required`` (POLICY-SPEC §3, check 9). Check 9 is
the guard's own now on the slow path too.
"""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecarkit import policy_copy, serve_sidecar, sidecar_settings

from guard._types import Action, Request
from guard.engine import decide
from guard.policy import load_policy
from guard.policy._load import SlowPathWarning
from guard.rights import EntryKind, Register
from guard.rights._entries import Record

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ASK = {"purpose": "marketing.third_party", "categories": ["contact.email"]}


def _consent_model(folder: Path) -> Path:
    """The shipped policy, with ``consent`` among the bases the matcher admits."""
    model = folder / "model.conf"
    text = model.read_text()
    admits = '(g3(r.pur, "contract") ||'
    assert admits in text
    model.write_text(text.replace(admits, '(g3(r.pur, "consent") || ' + admits[1:]))
    return folder


def _load(folder: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowPathWarning)
        return load_policy(folder)


@pytest.mark.filterwarnings("ignore::guard.policy._load.SlowPathWarning")  # the sidecar's load
def test_no_consent_no_third_party_marketing_on_the_slow_path(tmp_path: Path,
                                                              keys: Any) -> None:
    policy = _consent_model(policy_copy(tmp_path / "policy", POLICIES))
    assert not _load(policy).compiled
    marketing = {"authorization": f"Bearer {keys.mint('hs', sub='svc:marketing')}"}
    support = {"authorization": f"Bearer {keys.mint('hs', sub='svc:support')}"}
    with serve_sidecar(sidecar_settings(tmp_path, policy, keys.identity())) as server:
        def reason(subject: str | None) -> str:
            body = {**ASK, **({"subject": subject} if subject else {})}
            answer = httpx.post(server.url + "/v1/decide", json=body, headers=marketing,
                                timeout=10)
            assert answer.status_code == 200, answer.text
            return str(answer.json()["decision"]["reason"])

        assert reason("c-0001") == "consent_required"  # before: allowed, no consent recorded
        assert reason(None) == "consent_required"  # before: allowed
        consent = {"subject": "c-0001", "kind": "consent_granted",
                   "purpose": "marketing.third_party", "ref": "form 7"}
        answer = httpx.post(server.url + "/v1/subjects/entries", json=consent,
                            headers=support, timeout=10)
        assert answer.status_code == 201, answer.text
        assert reason("c-0001") == "allowed"  # the consent is what allows it


_KINDS = [EntryKind.CONSENT_GRANTED, EntryKind.CONSENT_WITHDRAWN, EntryKind.OBJECTION,
          EntryKind.RESTRICTION, EntryKind.ERASURE_REQUESTED, EntryKind.END_OF_RELATIONSHIP]
_PURPOSES = ["marketing", "marketing.third_party", "relationship.management",
             "order.processing.payments", "legal.compliance", "rights.request"]
_CALLERS = ["svc:marketing", "svc:crm", "svc:support", "proc:payments", "svc:web"]
_CATEGORIES = ["contact.email", "identity.name", "financial", "aggregated", "contact"]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    folder = tmp_path_factory.mktemp("slow")
    for name in ("model.conf", "rules.csv"):
        (folder / name).write_text((POLICIES / name).read_text())
    return _load(POLICIES), _load(_consent_model(folder))


@settings(max_examples=300, deadline=None)
@given(caller=st.sampled_from(_CALLERS), purpose=st.sampled_from(_PURPOSES),
       category=st.sampled_from(_CATEGORIES), action=st.sampled_from(list(Action)),
       subject=st.sampled_from([None, "c-1"]),
       entries=st.lists(st.tuples(st.sampled_from(_KINDS), st.sampled_from(_PURPOSES)),
                        max_size=3))
def test_the_slow_path_allows_what_the_compiled_engine_allows(
        both: tuple[Any, Any], caller: str, purpose: str, category: str, action: Action,
        subject: str | None, entries: list[tuple[EntryKind, str]]) -> None:
    compiled, slow = both
    register = Register(b"k" * 32)
    if entries:
        day = date(2020, 1, 1)
        register.apply(register.pseudonym("c-1"), [
            Record(kind, purpose if kind.names_purpose else "", day) for kind, purpose in entries])
    request = Request(caller, purpose, (category,), action, subject)
    assert decide(slow, request, register).allowed == decide(compiled, request, register).allowed
