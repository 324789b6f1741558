"""Thirteenth review: an event row written around the guard is one line naming it, not a crash.

A writer to the store can leave an ``audit_event`` row no guard wrote: a list column that
is not JSON or holds numbers, a number where text is. ``guard audit query`` stopped with a
``JSONDecodeError`` or ``TypeError`` traceback, and the console's decisions table and
event page answered 500, so the auditor lost the table (and the way to the other events)
until someone mended the row. Each now says which event is not as the guard writes it and
to run ``guard audit verify`` (which names the row).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import httpx
import pytest

_CONSOLE_KIT = Path(__file__).resolve().parents[1] / "console"
if str(_CONSOLE_KIT) not in sys.path:
    sys.path.insert(0, str(_CONSOLE_KIT))

from consolekit import AUDITOR, UvicornThread, console_settings, token  # noqa: E402

from middleware.console import create_console  # noqa: E402
from tests.security import clikit  # noqa: E402
from tests.security.audit_tamper_kit import make_keys, record, sql  # noqa: E402

CHANGES = ["categories = 'not json'", "categories = '[1, 2]'", "categories = '[{\"a\": 1}]'",
           "caller = x'41'", "ts = x'32'", "seq = 1.5"]


def _tampered(url: str, base: Path, change: str) -> str:
    events = record(url, make_keys(base), ["c-1", "c-2", "c-3"])
    target = events[1].event_id
    sql(url, f"UPDATE audit_event SET {change} WHERE event_id = ?", (target,))
    return target


@pytest.mark.parametrize("change", CHANGES)
def test_guard_audit_query_names_the_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str],
                                         change: str) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    target = _tampered(url, tmp_path, change)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    code, _out, err = clikit.run(monkeypatch, capsys, "audit", "query", "--store", url)
    # Before: a traceback (a seq that is no number: the row shown as if the guard wrote it).
    assert code == 2, err
    assert f"audit event '{target}' is not as the guard writes it" in err
    assert "guard audit verify" in err


@pytest.mark.parametrize("change", CHANGES[:3])
def test_the_consoles_pages_name_the_row(tmp_path: Path, change: str) -> None:
    settings = console_settings(tmp_path)
    target = _tampered(settings.audit.store, tmp_path / "writer", change)
    with UvicornThread(create_console(settings)) as server, \
            httpx.Client(base_url=server.url, timeout=20) as client:
        auth = {"authorization": f"Bearer {token(settings, AUDITOR)}"}
        table = client.get("/decisions", headers=auth)
        one = client.get(f"/events/{target}", headers=auth)
    # Before: 500, "Internal Server Error", for both.
    assert table.status_code == 200, table.text
    assert f"audit event &#39;{target}&#39; is not as the guard writes it" in table.text
    assert one.status_code == 400, one.text
    assert "guard audit verify" in one.text
