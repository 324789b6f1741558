"""Rows are read exactly as casbin's own file adapter reads them, with true positions."""

from __future__ import annotations

from pathlib import Path

import casbin
import pytest
from casbin.persist.adapter import _extract_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.policy._source import _columns, parse_rows

PLAIN = ["p", "g2", "svc:crm", "contact.email", "read", ",", ", ", " ,", " ", "\t", "#", "a b",
         "\u00a0", "\x0b", ""]
BRACKETS = ["(", ")", "[", "]", "x(y, z)", "[1, 2]"]
LINE = st.one_of(
    st.lists(st.sampled_from(PLAIN), max_size=10),  # the fast path
    st.lists(st.sampled_from(PLAIN + BRACKETS), max_size=10),  # casbin's tokenizer
).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=5))
def test_tokens_and_columns_match_casbin(lines: list[str]) -> None:
    text = "\n".join(lines)
    raw_lines = text.split("\n")  # casbin's file adapter reads lines with readline()
    try:
        expected = [
            (number, tokens) for number, raw in enumerate(raw_lines, start=1)
            if (tokens := _extract_tokens(raw.strip()))
        ]
    except IndexError:  # an unbalanced bracket: lint's check_readable reports it first
        with pytest.raises(IndexError):
            parse_rows(text, "policies/rules.csv")
        return
    rows = parse_rows(text, "policies/rules.csv")
    assert [(row.line, [row.ptype, *row.values]) for row in rows] == expected
    for row in rows:
        raw = raw_lines[row.line - 1]
        for token, column in zip([row.ptype, *row.values], row.columns, strict=True):
            assert raw[column - 1:].startswith(token), (raw, token, column)
        # the same columns as searching each token in turn (lint points at these)
        indent = len(raw) - len(raw.lstrip())
        assert row.columns == tuple(
            c + indent for c in _columns(raw.strip(), [row.ptype, *row.values])
        )
        assert row.location == f"rules.csv:{row.line}"


def test_shipped_rules_read_as_casbin_reads_them(policy_dir: Path) -> None:
    enforcer = casbin.Enforcer(str(policy_dir / "model.conf"), str(policy_dir / "rules.csv"))
    ours: dict[str, list[list[str]]] = {}
    for row in parse_rows((policy_dir / "rules.csv").read_text(), "rules.csv"):
        ours.setdefault(row.ptype, []).append(list(row.values))
    for sec in ("p", "g"):
        for ptype, assertion in enforcer.get_model().model[sec].items():
            assert assertion.policy == ours.get(ptype, []), ptype
