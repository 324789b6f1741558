"""``guard audit query|report|stats|verify``: the auditor's commands."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from guard import audit  # its modules load on first use: a command that needs none starts faster
from guard._cells import csv_cell
from guard._types import Reason
from guard.cli._groups import audit_app
from guard.cli._plain import visible
from guard.config import AuditSettings

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="sqlite:///PATH or postgresql://... (default: settings)"),
]
KeyOpt = Annotated[
    Path | None, typer.Option("--hmac-key", help="Subject HMAC key file (default: settings)")
]


def register(app: typer.Typer) -> None:
    """The audit commands live on ``audit_app`` (mounted as ``guard audit``); nothing to add."""


def _settings() -> AuditSettings:
    from guard.config import load_settings

    return load_settings().audit  # a bad setting is already one ConfigError line


def _open(store: str | None) -> audit.Store:
    return audit.open_store(store or _settings().store, create=False)


def _utf8(value: str | None, option: str) -> str | None:
    """``value`` if it is text UTF-8 can encode; a command-line byte string that is not
    (decoded with lone surrogates) is one line, never a traceback."""
    if value is not None:
        try:
            value.encode()
        except UnicodeEncodeError:
            raise audit.AuditQueryError(f"{option} is not UTF-8 text") from None
    return value


def _pseudonym(subject: str, key_path: Path | None) -> str:
    _utf8(subject, "--subject")
    if not subject.strip():
        raise audit.AuditQueryError("--subject must not be empty")
    return audit.pseudonymise(audit.load_hmac_key(key_path or _settings().hmac_key), subject)


def _chain_key(path: Path | None) -> bytes | None:
    """The chain key from ``--hmac-key``, else from ``audit.hmac_key`` if that file exists."""
    if path is None:
        path = _settings().hmac_key
        if not path.exists():
            return None
    return audit.derive_chain_key(audit.load_hmac_key(path))


def _reason(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return Reason(value).value
    except ValueError:
        known = ", ".join(r.value for r in Reason)
        raise audit.AuditQueryError(f"unknown --reason {value!r}; one of: {known}") from None


@audit_app.command("query")
def query_cmd(  # noqa: PLR0917 - one parameter per option
    caller: Annotated[str | None, typer.Option(help="Only this caller, e.g. svc:crm")] = None,
    purpose: Annotated[str | None, typer.Option(help="Purpose or any purpose under it")] = None,
    category: Annotated[str | None, typer.Option(help="Category or any under it")] = None,
    allowed: Annotated[
        bool | None, typer.Option("--allowed/--denied", help="Only allowed or only denied")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Only this reason code")] = None,
    subject: Annotated[
        str | None, typer.Option(help="Raw data-subject id (pseudonymised before searching)")
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO date/time or a span: 7d, 12h")] = None,
    until: Annotated[str | None, typer.Option(help="ISO date/time or a span: 7d, 12h")] = None,
    limit: Annotated[int, typer.Option(help="Most rows to show (newest first)")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV with a header")] = False,
    store: StoreOpt = None,
    hmac_key: KeyOpt = None,
) -> None:
    """List decisions that match every filter, newest first."""
    if as_json and as_csv:
        raise audit.AuditQueryError("choose one of --json and --csv")
    where = audit.EventFilter(
        caller=_utf8(caller, "--caller"),
        purpose=_utf8(purpose, "--purpose"),
        category=_utf8(category, "--category"),
        allowed=allowed,
        reason=_reason(reason),
        subject=_pseudonym(subject, hmac_key) if subject is not None else None,
        since=audit.parse_when(since, option="--since") if since else None,
        until=audit.parse_when(until, option="--until") if until else None,
    )
    if limit < 1:  # a mistake in the command, said before the store is looked for
        raise audit.AuditQueryError(f"--limit must be at least 1, not {limit}")
    rows = audit.query_events(_open(store), where, limit=limit)
    if as_json:
        for row in rows:
            sys.stdout.write(json.dumps({**row.event.to_dict(),
                                         "outcome_status": row.outcome_status}) + "\n")
    elif as_csv:
        _write_csv(rows)
    else:
        _print_table(rows)


def _write_csv(rows: list[audit.QueryRow]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow([*_CSV_FIELDS, "outcome_status"])
    for row in rows:
        data = row.event.to_dict()
        writer.writerow([csv_cell(_text(";".join(v) if isinstance(v, list) else v))
                         for v in (data[name] for name in _CSV_FIELDS)]
                        + [csv_cell(row.outcome_status)])


def _text(value: object) -> object:
    """A text cell with its control characters shown (a terminal reads stdout too)."""
    return visible(value) if isinstance(value, str) else value


_CSV_FIELDS = ("event_id", "ts", "caller", "party_type", "country", "purpose", "categories",
               "action", "allowed", "reason", "rule", "lawful_basis", "policy_version", "subject",
               "http_method", "http_route", "http_status", "trace_id", "span_id", "latency_us",
               "writer_id", "seq", "hash")


def _console() -> Console:
    """A console; when piped, wide enough that tables are not cut to 80 columns."""
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


def _print_table(rows: list[audit.QueryRow]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{len(rows)} decision(s), newest first")
    for column in ("time (UTC)", "caller", "purpose", "categories", "action", "result",
                   "reason", "subject", "status"):
        table.add_column(column)
    for row in rows:
        e = row.event
        table.add_row(*(Text(visible(cell)) for cell in (  # a client's purpose: no markup,
            e.ts[:19].replace("T", " "), e.caller, e.purpose, ", ".join(e.categories),  # no
            e.action, "allowed" if e.allowed else "denied", e.reason,  # terminal controls
            (e.subject or "-")[:12],
            "-" if row.outcome_status is None else str(row.outcome_status))))
    _console().print(table)


@audit_app.command("report")
def report_cmd(
    subject: Annotated[str, typer.Option(help="The person's raw id (never stored)")],
    fmt: Annotated[str, typer.Option("--format", help="markdown or json")] = "markdown",
    store: StoreOpt = None,
    hmac_key: KeyOpt = None,
) -> None:
    """Right-of-access report: who received this person's data, what, why, on what basis, when."""
    from guard.audit._report import render_json, render_markdown

    if fmt not in ("markdown", "json"):
        raise audit.AuditQueryError(f"--format must be markdown or json, not {fmt!r}")
    pseudonym = _pseudonym(subject, hmac_key)
    report = audit.subject_report(_open(store), pseudonym)
    sys.stdout.write(visible(render_markdown(report), lines=True) if fmt == "markdown"
                     else render_json(report) + "\n")


def _count_table(title: str, counts: tuple[audit.Count, ...]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title)
    for column in ("key", "denied", "allowed", "total"):
        table.add_column(column, justify="left" if column == "key" else "right")
    for c in counts:
        table.add_row(Text(visible(c.key)), str(c.denied), str(c.allowed), str(c.total))
    return table


@audit_app.command("stats")
def stats_cmd(
    since: Annotated[str, typer.Option(help="ISO date/time or a span: 30d, 12h")] = "30d",
    as_json: Annotated[bool, typer.Option("--json", help="JSON")] = False,
    store: StoreOpt = None,
) -> None:
    """Decision counts by caller, purpose and reason; most denials first."""
    where = audit.EventFilter(since=audit.parse_when(since, option="--since"))
    result = audit.stats(_open(store), where)
    if as_json:
        sys.stdout.write(json.dumps(asdict(result), indent=2) + "\n")
        return
    console = _console()
    console.print(f"{result.total} decision(s) since {result.since}: "
                  f"{result.denied} denied, {result.allowed} allowed")
    console.print(_count_table("by reason", result.by_reason))
    console.print(_count_table("by caller", result.by_caller))
    console.print(_count_table("by purpose", result.by_purpose))


@audit_app.command("verify")
def verify_cmd(
    store: StoreOpt = None,
    public_key: Annotated[
        Path | None,
        typer.Option("--public-key", help="Checkpoint public key (default: <signing_key>.pub)"),
    ] = None,
    hmac_key: Annotated[
        Path | None,
        typer.Option("--hmac-key", help="Subject HMAC key, from which the chain key is derived "
                                        "(default: settings)"),
    ] = None,
    witness: Annotated[
        Path | None,
        typer.Option("--witness", help="Witness file of signed checkpoints to check against"),
    ] = None,
    journal: Annotated[
        Path | None,
        typer.Option("--journal", help="Audit journal folder to check, and the store against "
                                       "it (default: the configured one, if it exists)"),
    ] = None,
) -> None:
    """Check every hash chain and signed checkpoint; exit 1 if tampered with, 3 if unfinished.

    Unfinished: a part of the store could not be read (locked: run it again).
    """
    from guard.audit._journal import lanes
    from guard.audit._jtrail import journal_folder
    from guard.audit._jverify import verify_journal
    from guard.audit._verify import unreadable

    settings = _settings()
    key_path = public_key or audit.public_key_path(settings.signing_key)
    report: audit.VerifyReport | None = None
    checked = None
    stopped: list[str] = []  # the journal's compare with the store, when its read stopped
    try:
        opened = _open(store)
        public = audit.load_public_key(key_path)
        chain_key = _chain_key(hmac_key)
        report = audit.verify(opened, public, chain_key=chain_key, witness=(
            audit.read_witness(witness) if witness is not None else None))
        folder = journal if journal is not None else journal_folder(settings)
        found = lanes(folder)
        if journal is not None and not found:
            typer.echo(f"error: no audit journal at {folder}", err=True)
            sys.exit(2)
        checked = verify_journal(opened, folder, public, chain_key=chain_key) if found else None
    except audit.AuditStoreError as exc:
        if not unreadable(exc):
            raise
        if report is None:  # a lock another connection holds: no finding either way
            typer.echo(visible(f"could not read: {exc}"))
            typer.echo("UNFINISHED: the store could not be read (run verify again)")
            sys.exit(3)
        stopped = [f"could not read: {exc}"]  # what the store's check found still stands
    summary = (f"{report.events} event(s) in {report.writers} chain(s), "
               f"{report.checkpoints} signed checkpoint(s)")
    label = "index: " if checked is not None else ""
    problems = [f"{label}{problem}" for problem in report.problems]
    if checked is not None:
        problems += [f"journal: damaged: {line}" for line in checked.damage]
        problems += [f"journal: {problem}" for problem in checked.journal.problems]
        problems += [f"index disagrees with the journal: {problem}" for problem in checked.index]
        summary += (f"; journal {folder}: {checked.journal.events} event(s) in "
                    f"{checked.lanes} lane(s)")
    unread = [f"could not read: {part}" for part in report.unread] + stopped
    for line in (*(f"note: {note}" for note in report.notes), *unread, *problems):
        typer.echo(visible(line))  # a store's ids: no terminal controls
    if problems:
        typer.echo(visible(f"TAMPERED: {len(problems)} problem(s); {summary}"))
        sys.exit(1)
    if unread:
        typer.echo(visible(f"UNFINISHED: {len(unread)} part(s) could not be read (run verify "
                           f"again); the rest intact: {summary}"))
        sys.exit(3)
    typer.echo(visible(f"intact: {summary}"))
