"""Thirteenth review: a register entry's reference is text in the Markdown access report.

``guard audit report`` writes the subject's rights requests into a Markdown table; a
reference (a ticket, or the subject's own words a rights-request system passed on) was
written as it came but for ``|``, so raw HTML or a link in it was markup wherever the
report was rendered: an ``<img onerror=...>`` or a ``javascript:`` link in the reply the
person (or the privacy team's tool) opens. Each cell now escapes what Markdown reads as
HTML, an entity, a link, code or a column.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from tests.security import clikit

SUBJECT = "cust-0047"
REF = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) <b>bold</b> `x` a|b"


def test_a_reference_renders_as_its_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         policy_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(policy_dir.parent)
    clikit.cli_store(tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _out, err = clikit.run(monkeypatch, capsys, "subject", "erase", SUBJECT,
                                 "--ref", REF)
    assert code == 0, err
    code, out, err = clikit.run(monkeypatch, capsys, "audit", "report", "--subject", SUBJECT)
    assert code == 0, err
    html = MarkdownIt("commonmark").enable("table").render(out)
    assert "<table>" in html
    # Before: an <img> with its onerror, a javascript: link and a <b>.
    assert "<img" not in html
    assert "href=" not in html
    assert "<b>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "[click](javascript:alert(1))" in html
