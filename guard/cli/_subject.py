"""``guard subject ...``: the privacy team's commands for the subject register (POLICY-SPEC §4)."""

from __future__ import annotations

import contextlib
import getpass
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from guard._subject_rule import subject_id_ok, subject_rule_error
from guard._types import Action, Request
from guard.cli._plain import visible
from guard.config import AuditSettings, Settings
from guard.engine import utc_today
from guard.rights import Change, Entry, EntryKind, Register, RegisterRefusedError, register_checks

subject_app = typer.Typer(
    help="Record and read data subjects' rights requests (consent, objection, restriction, "
         "erasure, end of relationship).",
    no_args_is_help=True,
)

SubjectArg = Annotated[str, typer.Argument(help="The data subject's id (stored only as its "
                                                "keyed pseudonym): 1 to 128 characters from "
                                                "A-Z a-z 0-9 - . _ ~ : @, not '.' or '..'.")]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="sqlite:///PATH or postgresql://... (default: settings)"),
]
PurposeOpt = Annotated[str, typer.Option("--purpose", help="Purpose or grouping node.")]
RefOpt = Annotated[str, typer.Option("--ref", help="A ticket, or the legal reason.")]
PolicyDirOpt = Annotated[
    Path | None,
    typer.Option("--policy-dir", help="Folder with model.conf and rules.csv "
                                      "[default: ./policies, else shipped]."),
]


def register(app: typer.Typer) -> None:
    """Mount ``guard subject``."""
    app.add_typer(subject_app, name="subject")


def _settings(store: str | None) -> Settings:
    from guard.config import load_settings

    settings = load_settings()
    if store:
        audit: AuditSettings = settings.audit.model_copy(update={"store": store})
        settings = settings.model_copy(update={"audit": audit})
    return settings


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@contextlib.contextmanager
def _guard(store: str | None, policy_dir: Path | None) -> Iterator[object]:
    """A guard on the configured audit store and policy, without policy events."""
    from guard._guard import Guard
    from guard.audit import load_hmac_key
    from guard.cli._check import _load
    from guard.cli._trail import command_trail
    from guard.cli._where import policy_folder
    from guard.policy._holder import PolicyHolder

    settings = _settings(store)
    policy = _load(policy_folder(policy_dir))
    hmac_key = load_hmac_key(settings.audit.hmac_key, create=True)
    register_ = Register.open(settings.audit.store, hmac_key)
    with contextlib.ExitStack() as stack:
        try:  # no index process: the command indexes its own events at its end
            trail = stack.enter_context(command_trail(settings.audit))
        except BaseException:
            register_.close()
            raise
        with Guard(PolicyHolder(lambda: policy), trail, hmac_key=hmac_key,
                   register=register_) as guard:
            yield guard


def _record(change: Change, store: str | None, policy_dir: Path | None) -> None:
    from guard._guard import Guard

    with _guard(store, policy_dir) as guard:
        assert isinstance(guard, Guard)
        entry = guard.record_subject_change(change)
    typer.echo(_line(entry))


def _line(entry: Entry) -> str:
    what = entry.kind.value.replace("_", " ")
    purpose = f" to {entry.purpose}" if entry.purpose else ""
    ref = f"; ref {visible(entry.ref)}" if entry.ref else ""
    return (f"recorded {what}{purpose}, effective {entry.effective} "
            f"(subject {entry.subject[:12]}..., entry {entry.seq}, audit event "
            f"{entry.event_id}){ref}")


@subject_app.command("consent")
def consent_cmd(  # noqa: PLR0917 - one parameter per option
    subject: SubjectArg,
    purpose: PurposeOpt,
    withdraw: Annotated[bool, typer.Option("--withdraw", help="Record a withdrawal.")] = False,
    ref: RefOpt = "",
    store: StoreOpt = None,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Record a consent to a purpose (or grouping node), or its withdrawal."""
    kind = EntryKind.CONSENT_WITHDRAWN if withdraw else EntryKind.CONSENT_GRANTED
    _record(Change(subject, kind, purpose, ref=ref, who=_who()), store, policy_dir)


@subject_app.command("object")
def object_cmd(  # noqa: PLR0917 - one parameter per option
    subject: SubjectArg,
    purpose: PurposeOpt,
    override: Annotated[bool, typer.Option(
        "--override", help="Override the objection on compelling legitimate grounds "
                           "(not under marketing; needs --ref).")] = False,
    ref: RefOpt = "",
    store: StoreOpt = None,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Record an objection to a purpose or grouping node, or override one."""
    kind = EntryKind.OBJECTION_OVERRIDDEN if override else EntryKind.OBJECTION
    _record(Change(subject, kind, purpose, ref=ref, who=_who()), store, policy_dir)


@subject_app.command("restrict")
def restrict_cmd(
    subject: SubjectArg,
    lift: Annotated[bool, typer.Option("--lift", help="Lift the restriction.")] = False,
    ref: RefOpt = "",
    store: StoreOpt = None,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Restrict processing of the subject's data (all but the exempt purposes), or lift it."""
    kind = EntryKind.RESTRICTION_LIFTED if lift else EntryKind.RESTRICTION
    _record(Change(subject, kind, ref=ref, who=_who()), store, policy_dir)


@subject_app.command("erase")
def erase_cmd(
    subject: SubjectArg,
    refuse: Annotated[bool, typer.Option(
        "--refuse", help="Refuse the erasure request (needs --ref: the legal reason).")] = False,
    ref: RefOpt = "",
    store: StoreOpt = None,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Record an erasure request (access stops but for the exempt purposes), or its refusal."""
    kind = EntryKind.ERASURE_REFUSED if refuse else EntryKind.ERASURE_REQUESTED
    _record(Change(subject, kind, ref=ref, who=_who()), store, policy_dir)


@subject_app.command("end")
def end_cmd(
    subject: SubjectArg,
    on: Annotated[str, typer.Option("--on", metavar="YYYY-MM-DD",
                                    help="The day the customer relationship ends.")],
    ref: RefOpt = "",
    store: StoreOpt = None,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Record the end of the customer relationship on a date (past or future)."""
    try:
        day = date.fromisoformat(on)
    except ValueError:
        raise RegisterRefusedError(f"--on {on!r} is not a date (YYYY-MM-DD)") from None
    if len(on) != len("YYYY-MM-DD"):
        raise RegisterRefusedError(f"--on {on!r} is not a date (YYYY-MM-DD)")
    _record(Change(subject, EntryKind.END_OF_RELATIONSHIP, effective=day, ref=ref, who=_who()),
            store, policy_dir)


def open_register(store: str | None) -> Register:
    """The register of the configured store, to read; empty if the store does not exist."""
    from guard.audit import load_hmac_key
    from guard.audit._store import sqlite_path

    settings = _settings(store)
    url = settings.audit.store
    if url.startswith("sqlite:///") and not sqlite_path(url).is_file():
        key_path = settings.audit.hmac_key
        return Register(load_hmac_key(key_path) if key_path.is_file() else b"\0" * 32)
    return Register.open(url, load_hmac_key(settings.audit.hmac_key))


@subject_app.command("show")
def show_cmd(
    subject: SubjectArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    store: StoreOpt = None,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """The subject's entries and, per declarable purpose, whether it may be used now."""
    from guard.cli._check import _load
    from guard.cli._where import policy_folder

    policy = _load(policy_folder(policy_dir))
    reg = open_register(store)
    try:
        entries = reg.history(subject)
        state = reg.lookup(subject) or ()
        pseudonym = reg.pseudonym(subject)
    finally:
        reg.close()
    today = utc_today()
    purposes = []
    for key in sorted(k for k, p in policy.purposes.items() if p.declarable):
        verdicts = register_checks(state, policy.purposes[key], personal=True, today=today,
                                   survival=policy.survival)
        last = verdicts[-1]
        purposes.append({
            "purpose": key, "may_use": last.passed,
            "reason": "allowed" if last.passed else last.reason.value,
            "entry": last.record.rule if last.record is not None and not last.passed else None,
            "detail": last.detail,
        })
    if as_json:
        typer.echo(json.dumps({"subject": pseudonym, "today": today.isoformat(),
                               "entries": [e.to_dict() for e in entries],
                               "purposes": purposes}, indent=2))
        return
    typer.echo(f"subject {pseudonym} ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'})")
    for e in entries:
        typer.echo(visible(f"  {e.seq:>3} {e.effective} {e.kind.value:<21} "  # the store's
                           f"{e.purpose or '-':<32} by {e.recorded_by} at {e.recorded_at}"  # text:
                           + (f"; ref {e.ref}" if e.ref else "")))  # no terminal controls
    typer.echo(f"purposes on {today}:")
    for row in purposes:
        verdict = "may use" if row["may_use"] else f"NO ({row['reason']}: {row['detail']})"
        typer.echo(f"  {row['purpose']:<32} {verdict}")


def _stdin_ids() -> Iterator[str]:
    """Subject ids from standard input, one a line; a line that is not UTF-8, or not an id
    under the subject rule (a space or a byte-order mark around it), is left out, said."""
    for number, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            typer.echo(f"guard: warning: line {number} is not UTF-8; left out", err=True)
            continue
        if line.strip() and not subject_id_ok(line):
            typer.echo(f"guard: warning: line {number}: {subject_rule_error(line)}; left out",
                       err=True)
            continue
        yield line


@subject_app.command("filter")
def filter_cmd(  # noqa: PLR0917 - one parameter per option
    caller: Annotated[str, typer.Option("--caller", help="Caller id, e.g. svc:marketing.")],
    purpose: Annotated[str, typer.Option("--purpose", help="Declared purpose.")],
    category: Annotated[list[str], typer.Option("--category", help="Data category (repeat).")],
    action: Annotated[str, typer.Option("--action", metavar="read|write")] = "read",
    store: StoreOpt = None,
    policy_dir: PolicyDirOpt = None,
) -> None:
    """Subject ids on stdin, one a line: print those the request may use, in input order.

    Each printed subject's decision is in the audit trail, all with one batch id.
    """
    from guard._guard import Guard
    from guard.rights._filter import filter_subjects

    if action not in ("read", "write"):
        raise RegisterRefusedError(f"--action must be read or write, not {action!r}")
    template = Request(caller, purpose, tuple(category), Action(action))
    batch_id = uuid.uuid4().hex
    subjects = _stdin_ids()
    with _guard(store, policy_dir) as guard:
        assert isinstance(guard, Guard)
        out = sys.stdout
        for subject in filter_subjects(guard, template, (s for s in subjects if s.strip()),
                                       batch_id=batch_id, asker=_who()):
            out.write(subject + "\n")
        out.flush()
    typer.echo(f"guard: batch {batch_id}", err=True)
