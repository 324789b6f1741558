"""Fourth review: a policy row is a row for the reviewer and the guard alike.

A change to rules.csv or routes.csv is reviewed as git shows it: lines end at
``\\n`` (git, code-review pages, ``casbin``'s own file adapter read it so). Python's
``str.splitlines`` also ends a line at ``\\r``, ``\\x0b``, ``\\x0c``, ``\\x1c``-``\\x1e``,
``\\x85``, U+2028 and U+2029, most of which a terminal or a review page does not show.
A row hidden after such a character in a comment line must never be read as a
grant or a route: the file is refused at the line and column, or read as one line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import casbin
import pytest

from guard._errors import PolicyError
from guard._types import Request
from guard.engine import decide
from guard.policy import lint_policy, load_policy
from middleware.routes import RouteTable, parse_routes

SHIPPED = Path(__file__).resolve().parents[2] / "policies"
BREAKS = ("\x85", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r")
GRANT = "p, proc:payments, order.processing.payments, contact.email, read"
WANTED = Request("proc:payments", "order.processing.payments", ("contact.email",))


def copy(tmp_path: Path) -> Path:
    folder = tmp_path / "policy"
    shutil.copytree(SHIPPED, folder)
    return folder


@pytest.mark.parametrize("hidden", BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_grant_hidden_in_a_comment_line_is_never_a_grant(tmp_path: Path, hidden: str) -> None:
    folder = copy(tmp_path)
    rules = folder / "rules.csv"
    before = rules.read_text()
    assert not decide(load_policy(folder), WANTED, None).allowed
    line = f"# reviewed by the DPO: no new grants{hidden}{GRANT}\n"
    rules.write_text(before + line)
    number = before.count("\n") + 1
    # What a reviewer reads (git) and casbin's own file adapter load: one comment line.
    assert rules.read_bytes().count(b"\n") == number
    model = casbin.Enforcer(str(folder / "model.conf"), str(rules)).get_model()
    assert ["proc:payments", "order.processing.payments", "contact.email", "read"] not in \
        model.get_policy("p", "p")
    with pytest.raises(PolicyError, match=rf"rules\.csv:{number}:\d+: U\+{ord(hidden):04X} "):
        load_policy(folder)  # refused where the hidden line break is
    findings = [f for f in lint_policy(folder) if f.line == number]
    assert [(f.code, f.severity.value) for f in findings] == [("hidden-line-break", "error")]


@pytest.mark.parametrize("hidden", BREAKS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_public_route_hidden_in_a_comment_line_is_never_a_route(
        tmp_path: Path, hidden: str) -> None:
    text = ("GET, /customers/{customer_id}, identity contact, read, customer_id\n"
            "# the admin API stays undeclared, so it is refused"
            f"{hidden}GET, /admin/{{rest:path}}, public\n")
    assert not any(r.public for r in parse_routes(text.replace(hidden, " ")))  # as reviewed
    with pytest.raises(PolicyError, match=r"routes\.csv:2:\d+: U\+"):
        parse_routes(text)
    routes = tmp_path / "routes.csv"
    routes.write_bytes(text.encode())
    with pytest.raises(PolicyError, match=r"routes\.csv:2:\d+: U\+"):
        RouteTable.from_csv(routes)


def test_crlf_files_read_as_before(tmp_path: Path) -> None:
    folder = copy(tmp_path)
    for name in ("rules.csv", "routes.csv"):
        path = folder / name
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert load_policy(folder).version == load_policy(SHIPPED).version
    assert RouteTable.from_csv(folder / "routes.csv").rules == \
        RouteTable.from_csv(SHIPPED / "routes.csv").rules
