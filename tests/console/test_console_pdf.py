"""The right-of-access PDF of a subject with many decisions: complete, truthful, grouped."""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
from consolekit import AUDITOR, UvicornThread, console_settings, token
from fpdf import FPDF
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader
from subjectkit import ACCESSES, subject_decisions, write_decisions

from guard import Guard
from guard.audit import AuditEvent, EventKind, load_hmac_key, open_store, pseudonymise
from guard.rights import Change, EntryKind
from middleware.console import create_console
from middleware.console._data import Row, subject_events
from middleware.console._pdf import _wrap, group_decisions

CUSTOMER = "c-long-standing"
"""The raw id of a customer with many decisions; it must not appear in the PDF."""
MANY = 1_500


def squash(text: str) -> str:
    """``text`` without whitespace: a table cell may wrap onto several lines anywhere."""
    return "".join(text.split())


def occurrences(flat: str, count: int, first: str, last: str, row: Row) -> int:
    """How often the decisions table line of ``count`` decisions like ``row`` is in ``flat``.

    The auditor's look-up gets its status from the outcome of its first view, which the
    trail may index just after the reply was built: it may still show none.
    """
    e = row.event
    outcome = "allowed" if e.allowed else f"refused: {e.reason}"
    statuses = {row.status, None} if e.caller == AUDITOR else {row.status}
    return sum(flat.count(squash(
        f"{count} {first} {last} {e.caller} {e.country or '-'} {e.purpose} {e.action} "
        f"{', '.join(e.categories) or '-'} {', '.join(e.lawful_basis) or '-'} {outcome} "
        f"{'-' if status is None else status}")) for status in statuses)


def pdf_text(body: bytes) -> tuple[str, int]:
    """The PDF's text (pypdf) and its number of pages."""
    reader = PdfReader(io.BytesIO(body))
    return "\n".join(page.extract_text() for page in reader.pages), len(reader.pages)


def reply(base: Path, raw_subject: str, events: int, *, distinct: bool = False) -> tuple[
        bytes, list[Row], str]:
    """The PDF the console exports for a subject with ``events`` decisions in the store.

    Returns the PDF, every decision about the subject in the store (the auditor's
    look-up included) and the pseudonym.
    """
    conf = console_settings(base)
    pseudonym = pseudonymise(load_hmac_key(conf.audit.hmac_key, create=True), raw_subject)
    store = open_store(conf.audit.store)
    try:
        write_decisions(store, subject_decisions(pseudonym, events, distinct=distinct))
    finally:
        store.close()
    with Guard.from_settings(conf) as guard:
        guard.record_subject_change(Change(raw_subject, EntryKind.OBJECTION, "marketing",
                                           ref="ticket-99", who="test:dpo"))
    with UvicornThread(create_console(conf)) as server, httpx.Client(
            base_url=server.url, timeout=60,
            headers={"authorization": f"Bearer {token(conf, AUDITOR)}"}) as client:
        location = client.post("/subject", data={"subject": raw_subject}).headers["location"]
        answer = client.get(location.replace("?", "/report.pdf?"))
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/pdf"
    store = open_store(conf.audit.store)
    try:
        stored = subject_events(store, pseudonym)
    finally:
        store.close()
    return answer.content, stored, pseudonym


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, list[Row], str]:
    base = tmp_path_factory.mktemp("console-pdf")
    body, stored, pseudonym = reply(base, CUSTOMER, MANY)
    text, pages = pdf_text(body)
    return text, pages, stored, pseudonym


def test_every_decision_is_counted_once_in_a_line_of_its_own_kind(
        many: tuple[str, int, list[Row], str]) -> None:
    text, _, rows, _ = many
    stored = [r.event for r in rows]
    assert len(stored) == MANY + 1  # the auditor's look-up is a decision about the subject too
    refused = sum(1 for e in stored if not e.allowed)
    assert f"{len(stored)} decision(s): {len(stored) - refused} allowed, {refused} refused." in text
    # Independently of the PDF module: every kind of decision, its number, first and last time.
    kinds: dict[tuple[object, ...], list[Row]] = {}
    for row in rows:
        e = row.event
        key = (e.caller, e.country, e.purpose, e.action, e.categories, e.lawful_basis,
               e.allowed, e.reason, row.status)
        kinds.setdefault(key, []).append(row)
    assert len(kinds) == 2 * len(ACCESSES) + 1
    flat = squash(text)
    total = 0
    for alike in kinds.values():
        times = [r.event.ts for r in alike]
        assert occurrences(flat, len(alike), min(times), max(times), alike[0]) == 1, alike[0]
        total += len(alike)
    assert total == len(stored)
    # No other line in the decisions table (the last section): two times a line.
    table = flat[flat.index(squash("Count First (UTC) Last (UTC)")):]
    assert len(re.findall(r"\d\d:\d\d:\d\d\.\d{6}Z", table)) == 2 * len(kinds)


def test_the_reply_names_every_recipient_purpose_transfer_and_register_entry(
        many: tuple[str, int, list[Row], str]) -> None:
    text, pages, rows, pseudonym = many
    stored = [r.event for r in rows]
    assert pseudonym in text.replace("\n", "")
    assert CUSTOMER not in text
    allowed = [e for e in stored if e.allowed]
    assert f"Accesses: {len(allowed)} by {len({e.caller for e in allowed})} recipient(s); " \
           f"{len(stored) - len(allowed)} refused request(s)" in text
    flat = squash(text)
    for caller in {e.caller for e in allowed}:
        mine = [e for e in allowed if e.caller == caller]
        party, country = mine[-1].party_type, mine[-1].country
        purposes = ", ".join(sorted({e.purpose for e in mine}))
        categories = ", ".join(sorted({c for e in mine for c in e.categories}))
        basis = ", ".join(sorted({b for e in mine for b in e.lawful_basis}))
        assert squash(f"{caller} {party} {country} {purposes} {categories} {basis} "
                      f"{len(mine)} {mine[0].ts} {mine[-1].ts}") in flat, caller
    transfers = flat[flat.index("TransfersoutsidetheUK"):flat.index("Rightsrequests")]
    for caller, country, safeguard in (("grp:exalens-in", "IN", "idta"),
                                       ("grp:exalens-nl", "NL", "adequate"),
                                       ("proc:mailer", "US", "idta")):
        count = sum(1 for e in allowed if e.caller == caller)
        assert squash(f"{caller} {country} {safeguard} {count}") in transfers
    register = flat[flat.index("Rightsrequests"):flat.index("Everydecisionabout")]
    assert squash("objection marketing") in register
    assert squash("test:dpo ticket-99") in register
    assert "in the CSV and JSON exports" in text
    assert pages <= 3  # one line per kind of decision, not one per decision


def test_decisions_that_all_differ_each_get_their_line(tmp_path: Path) -> None:
    body, rows, _ = reply(tmp_path, "c-everything-differs", 120, distinct=True)
    text, _ = pdf_text(body)
    flat = squash(text)
    assert flat.count(squash("Count First (UTC)")) >= 2  # the headings again on the next page
    for row in rows:
        assert occurrences(flat, 1, row.event.ts, row.event.ts, row) == 1, row.event.caller


ALIKE = st.builds(
    lambda i, caller, allowed, status, second: Row(AuditEvent(
        event_id=f"e{i}", kind=EventKind.DECISION, ts=f"2026-01-01T00:00:{second:02d}Z",
        caller=caller, country="GB", purpose="p", categories=("identity",), action="read",
        allowed=allowed, reason="allowed" if allowed else "category_not_granted",
        lawful_basis=("contract",) if allowed else ()), status),
    st.integers(), st.sampled_from(["svc:a", "svc:b", "grp:c"]), st.booleans(),
    st.sampled_from([None, 200, 403]), st.integers(0, 59))


@settings(max_examples=200, deadline=None)
@given(st.lists(ALIKE, max_size=60))
def test_grouping_keeps_every_decision_once_with_its_true_first_and_last(rows: list[Row]) -> None:
    groups = group_decisions(rows)
    assert sum(g.count for g in groups) == len(rows)
    keys = [(g.recipient, g.country, g.purpose, g.action, g.categories, g.lawful_basis,
             g.allowed, g.reason, g.status) for g in groups]
    assert len(set(keys)) == len(keys)
    members: Counter[tuple[object, ...]] = Counter()
    for row in rows:
        e = row.event
        key = (e.caller, e.country, e.purpose, e.action, e.categories, e.lawful_basis,
               e.allowed, e.reason, row.status)
        group = groups[keys.index(key)]
        assert group.first <= e.ts <= group.last
        members[key] += 1
    for key, group in zip(keys, groups, strict=True):
        times = [r.event.ts for r in rows if r.event.caller == key[0] and r.status == key[8]
                 and r.event.allowed == key[6]]
        assert (group.count, group.first, group.last) == (members[key], min(times), max(times))
    assert [g.first for g in groups] == sorted(g.first for g in groups)


LATIN_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=120)


@settings(max_examples=300, deadline=None)
@given(LATIN_TEXT, st.floats(8, 120), st.sampled_from([6.0, 7.5, 8.0, 12.0]))
def test_a_cells_text_is_broken_into_lines_that_fit_and_lose_nothing(
        text: str, width: float, size: float) -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=size)
    lines = _wrap(text, width, pdf)
    assert "".join("".join(line.split()) for line in lines) == "".join(text.split())
    for line in lines:  # measured by fpdf2 itself; a lone character may be wider
        assert len(line) <= 1 or pdf.get_string_width(line) <= width + 1e-6, line
    words = text.split()
    if words and all(pdf.get_string_width(w) <= width for w in words):
        assert " ".join(lines).split() == words  # breaks only at spaces when words fit
