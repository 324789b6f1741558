"""Lint of routes.csv: every row the route loader refuses is a lint error, with position.

Lint used to warn only about unknown categories, so a routes.csv that stops the
sidecar (unknown method, unknown action, a subject parameter not in the template)
passed lint. Lint now asks the loader itself, so the two cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policykit import copy_policy

from guard._errors import PolicyError
from guard.policy import lint_policy
from guard.policy._findings import Severity
from guard.policy._lint_base import Tree
from guard.policy._lint_routes import lint_routes
from middleware.routes import RouteTable


def route_findings(folder: Path) -> list[tuple[str, int | None, int | None, Severity]]:
    return [(f.code, f.line, f.column, f.severity) for f in lint_policy(folder)
            if f.path.endswith("routes.csv")]


def test_rows_that_stop_the_sidecar_are_errors_with_line_and_column(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    rows = [
        "GET,   /healthz,        public",
        "FETCH, /a,              contact",                      # unknown method
        "GET,   /b/{id},         contact, reed, id",            # unknown action
        "GET,   /c/{id},         contact, read, customer_id",   # subject not in the template
        "GET,   /d/{id},         contact, read, id",
    ]
    (folder / "routes.csv").write_text("\n".join(rows) + "\n")
    with_errors = [f for f in lint_policy(folder) if f.severity is Severity.ERROR]
    assert [(f.code, f.line, f.column) for f in with_errors] == [
        ("route-refused", 2, 1),
        ("route-refused", 3, rows[2].index("reed") + 1),
        ("route-refused", 4, rows[3].index("customer_id") + 1),
    ]
    assert "unknown HTTP method 'FETCH'" in with_errors[0].message
    assert "action must be read or write" in with_errors[1].message
    assert "'customer_id' is not in the path template" in with_errors[2].message
    assert str(with_errors[2]).startswith(f"{folder / 'routes.csv'}:4:")
    with pytest.raises(PolicyError) as refused:
        RouteTable.from_csv(folder / "routes.csv")
    assert (refused.value.line, refused.value.column) == (2, 1)  # the loader stops at one


def test_an_unreadable_routes_file_is_an_error(tmp_path: Path) -> None:
    folder = copy_policy(tmp_path)
    (folder / "routes.csv").write_bytes(b"GET, /a, contact\n\xff\xfe\n")
    assert route_findings(folder) == [("routes-unreadable", None, None, Severity.ERROR)]


# ---------------------------------------------------------------- property

METHODS = st.sampled_from(["GET", "get", "POST", "*", "FETCH", "", "HEAD"])
PATHS = st.sampled_from(["/a", "/a/{id}", "/a/{id:int}", "/b/{x}/{y}", "a", "/c/{id",
                         "/d/{id:bogus}", "/e/{id}/{id}", "/healthz"])
CATEGORIES = st.sampled_from(["contact", "identity contact", "public", "", "Contact",
                              "loyalty", "special.health", "contact;x"])
ACTIONS = st.sampled_from([None, "", "read", "write", "WRITE", "reed"])
SUBJECTS = st.sampled_from([None, "", "id", "x", "customer_id"])
EXTRA = st.sampled_from([None, "", "more"])


@st.composite
def route_rows(draw: st.DrawFn) -> str:
    fields = [draw(METHODS), draw(PATHS), draw(CATEGORIES)]
    for optional in (draw(ACTIONS), draw(SUBJECTS), draw(EXTRA)):
        if optional is None:
            break
        fields.append(optional)
    return ", ".join(fields)


ROUTES_TEXT = st.lists(
    st.one_of(route_rows(), st.sampled_from(["", "# comment", "BROKEN", 'GET, "/q, x'])),
    max_size=8,
).map(lambda rows: "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("routes") / "routes.csv"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=ROUTES_TEXT)
def test_lint_reports_an_error_exactly_when_the_loader_refuses(scratch: Path, text: str) -> None:
    """For any routes.csv: RouteTable.from_csv raises if and only if lint has an error,
    and lint's first error is the loader's, at the same line and column."""
    scratch.write_text(text, encoding="utf-8")
    errors = [f for f in lint_routes(scratch, Tree("category")) if f.severity is Severity.ERROR]
    refused: PolicyError | None = None
    try:
        RouteTable.from_csv(scratch)
    except PolicyError as exc:
        refused = exc
    if refused is None:
        assert errors == [], [str(f) for f in errors]
    else:
        assert errors, f"the loader refused ({refused}) but lint found nothing"
        assert (errors[0].line, errors[0].column, errors[0].message) == (
            refused.line, refused.column, refused.message)


def test_the_property_holds_for_the_file_loader(tmp_path: Path) -> None:
    """The same through files, as the sidecar reads them."""
    folder = copy_policy(tmp_path, routes=True)
    assert route_findings(folder) == [
        (code, line, col, sev) for code, line, col, sev in route_findings(folder)
        if sev is Severity.WARNING
    ]
    RouteTable.from_csv(folder / "routes.csv")  # loads: and lint has no error
    (folder / "routes.csv").write_text("GET, /a/{id}, contact, read, id\nGET, /a/{id}, x\n")
    with pytest.raises(PolicyError) as refused:
        RouteTable.from_csv(folder / "routes.csv")
    assert [(f.line, f.column) for f in lint_policy(folder)
            if f.severity is Severity.ERROR] == [(refused.value.line, refused.value.column)]


def test_a_row_an_earlier_row_takes_is_a_warning_naming_it(tmp_path: Path) -> None:
    """The table refuses a path an earlier row would take upstream (another case, a trailing
    slash or a ``.format``): each such row's requests are all route_not_declared."""
    rows = [
        "GET,   /customers/export,            financial",
        "GET,   /customers/export.csv,        financial",
        "GET,   /files/{name:path},           contact, read",
        "GET,   /files,                       public",
        "GET,   /customers/{customer_id},     identity, read, customer_id",
        "GET,   /Reports,                     financial",
        "GET,   /reports,                     financial",
    ]
    scratch = tmp_path / "routes.csv"
    scratch.write_text("\n".join(rows) + "\n")
    taken = [f for f in lint_routes(scratch, Tree("category")) if f.code == "route-taken-earlier"]
    assert [(f.line, f.column, f.severity) for f in taken] == [
        (n, rows[n - 1].index("/") + 1, Severity.WARNING) for n in (2, 4, 7)]
    assert "line 1 (GET /customers/export)" in taken[0].message
    assert taken[1].hint == "list this row before line 3"
    table = RouteTable.from_csv(scratch)
    for finding in taken:  # what lint says is what the table does
        path = rows[finding.line - 1].split(",")[1].strip()
        assert table.match("GET", path) is None, path
    reordered = [rows[1], rows[0], rows[3], rows[2], *rows[4:5]]
    scratch.write_text("\n".join(reordered) + "\n")
    assert not [f for f in lint_routes(scratch, Tree("category"))
                if f.code == "route-taken-earlier"]
