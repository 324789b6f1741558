"""``guard check`` and ``guard explain``: ask the engine, one request or a stream of them."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

from guard._types import Action, Decision, Reason, Request, denial
from guard.cli._where import policy_folder, say_policy
from guard.engine import Step, SubjectLookup, decide, explain
from guard.policy import CompiledPolicy, SlowPathWarning, load_policy

if TYPE_CHECKING:
    from guard.rights import Register, State

EXIT_ALLOWED = 0
EXIT_DENIED = 1
PROGRESS_EVERY = 10_000  # batch lines between progress updates on a terminal
LARGE_INPUT_BYTES = 1 << 20  # a batch file this big shows progress from the start
BATCH_KEYS = frozenset({"caller", "purpose", "categories", "action", "subject"})

# What each check asks, in words for someone who has never read the policy files.
CHECK_TITLES = {
    "malformed_request": "the request names at least one category",
    "unknown_caller": "the caller is in the policy",
    "unknown_purpose": "the purpose is one a request may declare",
    "unknown_category": "every category is in the category tree",
    "special_category": "no category is special (never collected)",
    "purpose_not_granted": "the caller holds a grant on this purpose (or a parent)",
    "category_not_in_purpose": "every category is within the purpose's ceiling",
    "category_not_granted": "the caller's grant covers every category and the action",
    "transfer_not_safeguarded": "data may go to the caller's country",
    "consent_required": "the purpose has a basis other than consent, or the subject consented",
    "retention_expired": "the subject's relationship is in force, or the purpose survives it",
    "erasure_requested": "no erasure request of the subject is in force (or exempt purpose)",
    "processing_restricted": "no restriction of the subject is in force (or exempt purpose)",
    "objection_recorded": "no objection of the subject to the purpose is in force",
    "casbin": "casbin's matcher allows the category",
}

CallerOpt = Annotated[str | None, typer.Option("--caller", help="Caller id, e.g. svc:crm.")]
PurposeOpt = Annotated[
    str | None, typer.Option("--purpose", help="Declared purpose, e.g. relationship.management.")
]
CategoryOpt = Annotated[
    list[str] | None,
    typer.Option("--category", help="Data category (repeat for several), e.g. contact.email."),
]
ActionOpt = Annotated[str, typer.Option("--action", metavar="read|write", help="read or write.")]
SubjectOpt = Annotated[
    str | None, typer.Option("--subject", help="Data-subject id, when one person is concerned.")
]
PolicyDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy-dir",
        help="Folder with model.conf and rules.csv [default: [policy] dir, else ./policies, "
        "else the shipped copy].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Audit store holding the subject register "
                                 "(default: settings)."),
]
BatchOpt = Annotated[
    str | None,
    typer.Option(
        "--batch",
        metavar="FILE",
        help="Judge one JSON request per line of FILE ('-' for stdin), one JSON decision per line.",
    ),
]


def _usage_error(message: str) -> NoReturn:
    typer.echo(f"guard: error: {message}", err=True)
    raise SystemExit(2)


def register(app: typer.Typer) -> None:
    """Add ``check`` and ``explain`` to the ``guard`` app."""
    app.command("check")(check)
    app.command("explain")(explain_command)


def check(  # noqa: PLR0917 - typer maps each option to a parameter
    caller: CallerOpt = None,
    purpose: PurposeOpt = None,
    category: CategoryOpt = None,
    action: ActionOpt = "read",
    subject: SubjectOpt = None,
    policy_dir: PolicyDirOpt = None,
    as_json: JsonOpt = False,
    batch: BatchOpt = None,
    store: StoreOpt = None,
) -> None:
    """Decide one request: exit 0 allowed, 1 denied, 2 usage or policy error.

    With --batch, decide one JSON request per input line and print one JSON decision
    per line (exit 0 once every line is answered, 2 if the policy cannot load).
    """
    if batch is not None:
        if caller or purpose or category or subject:
            _usage_error("--batch reads requests from FILE; drop --caller/--purpose/"
                         "--category/--subject")
        folder = policy_folder(policy_dir)
        policy = _load(folder)
        lazy = _LazyRegister(store)
        try:
            _run_batch(policy, batch, lazy)
        finally:
            lazy.close()
        say_policy(folder, policy_dir)
        raise SystemExit(0)
    request = _request(caller, purpose, category, action, subject)
    folder = policy_folder(policy_dir)
    decision = _with_register(store, request, lambda reg: _decide(_load(folder), request, reg))
    if as_json:
        typer.echo(json.dumps(decision.to_dict()))
    else:
        typer.echo(summary(decision))
    say_policy(folder, policy_dir)
    raise SystemExit(EXIT_ALLOWED if decision.allowed else EXIT_DENIED)


def explain_command(  # noqa: PLR0917 - typer maps each option to a parameter
    caller: CallerOpt = None,
    purpose: PurposeOpt = None,
    category: CategoryOpt = None,
    action: ActionOpt = "read",
    subject: SubjectOpt = None,
    policy_dir: PolicyDirOpt = None,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Show each check in order, what it looked at and its verdict, then the decision."""
    request = _request(caller, purpose, category, action, subject)
    folder = policy_folder(policy_dir)
    policy = _load(folder)

    def run(register: SubjectLookup | None) -> tuple[Decision, list[Step]]:
        try:
            return explain(policy, request, register)
        except Exception:  # fail closed, and no traceback
            return denial(Reason.INTERNAL_ERROR, request, policy.version), []

    decision, steps = _with_register(store, request, run)
    if as_json:
        typer.echo(json.dumps({
            "decision": decision.to_dict(),
            "steps": [
                {"check": s.check, "question": CHECK_TITLES.get(s.check, s.check),
                 "looked_at": s.looked_at, "passed": s.passed, "detail": s.detail}
                for s in steps
            ],
        }))
    else:
        _print_steps(steps)
        typer.echo(summary(decision))
    say_policy(folder, policy_dir)
    raise SystemExit(EXIT_ALLOWED if decision.allowed else EXIT_DENIED)


def summary(decision: Decision) -> str:
    """One human line: verdict, request, reason, rule(s), lawful basis, policy version."""
    verdict = "ALLOWED" if decision.allowed else "DENIED"
    cats = ", ".join(decision.categories) or "-"
    return (
        f"{verdict} {decision.caller} {decision.action.value} {cats} "
        f"for {decision.purpose or '-'}: reason {decision.reason.value}; "
        f"rule {', '.join(decision.rule) or '-'}; "
        f"lawful basis {', '.join(decision.lawful_basis) or '-'}; "
        f"policy {decision.policy_version}"
    )


def _request(
    caller: str | None,
    purpose: str | None,
    category: list[str] | None,
    action: str,
    subject: str | None,
) -> Request:
    if not caller or not purpose or not category:
        missing = [name for name, value in
                   (("--caller", caller), ("--purpose", purpose), ("--category", category))
                   if not value]
        _usage_error(f"missing {', '.join(missing)} (or use --batch FILE)")
    if action not in ("read", "write"):
        _usage_error(f"--action must be read or write, not {action!r}")
    return Request(caller, purpose, tuple(category), Action(action), subject or None)


def _decide(
    policy: CompiledPolicy, request: Request, register: SubjectLookup | None = None
) -> Decision:
    """The engine's decision; an unexpected error is a denial (fail closed)."""
    try:
        return decide(policy, request, register)
    except Exception:
        return denial(Reason.INTERNAL_ERROR, request, policy.version)


T = TypeVar("T")


def _with_register(
    store: str | None, request: Request, run: Callable[[SubjectLookup | None], T]
) -> T:
    """Run ``run`` with the configured subject register if the request names a subject."""
    if request.subject is None:
        return run(None)
    from guard.cli._subject import open_register

    register = open_register(store)
    try:
        return run(register)
    finally:
        register.close()


class _LazyRegister:
    """The subject register, opened at the first batch line that names a subject."""

    def __init__(self, store: str | None) -> None:
        self._store = store
        self._register: Register | None = None

    def lookup(self, subject: str) -> State | None:
        if self._register is None:
            from guard.cli._subject import open_register

            self._register = open_register(self._store)
        return self._register.lookup(subject)

    def close(self) -> None:
        if self._register is not None:
            self._register.close()


def _load(folder: Path | None) -> CompiledPolicy:
    """Load once; lint warnings and the slow-path notice become one stderr line each.

    Args:
        folder: The policy folder, as :func:`guard.cli._where.policy_folder` resolves it.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SlowPathWarning)
        policy = load_policy(folder)
    for warning in caught:
        typer.echo(f"guard: warning: {warning.message}", err=True)
    return policy


def _print_steps(steps: list[Step]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Checks, in the order the guard runs them", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("check")
    table.add_column("looked at")
    table.add_column("verdict")
    table.add_column("detail")
    for number, step in enumerate(steps, start=1):
        verdict = "[green]pass[/green]" if step.passed else "[bold red]FAIL[/bold red]"
        table.add_row(
            str(number), CHECK_TITLES.get(step.check, step.check), step.looked_at, verdict,
            step.detail,
        )
    Console(highlight=False, soft_wrap=False).print(table)


# ---------------------------------------------------------------------------- batch


def _run_batch(
    policy: CompiledPolicy, batch: str, register: SubjectLookup | None = None
) -> None:
    """Judge each line of the batch input in order, streaming; never stop at a bad line."""
    if batch == "-":
        stream: IO[bytes] = sys.stdin.buffer
        size = 0
    else:
        path = Path(batch)
        try:
            stream = path.open("rb")
            size = path.stat().st_size
        except OSError as exc:
            _usage_error(f"cannot read batch file {batch}: {exc.strerror}")
    flush = batch == "-"  # a pipe may be answered line by line
    progress = sys.stderr.isatty()
    show_from = 0 if size >= LARGE_INPUT_BYTES else PROGRESS_EVERY
    out = sys.stdout
    count = 0
    with stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            record = judge_line(policy, raw, number, register)
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            if flush:
                out.flush()
            count += 1
            if progress and count >= show_from and count % PROGRESS_EVERY == 0:
                sys.stderr.write(f"\rguard: judged {count:,} requests")
                sys.stderr.flush()
    out.flush()
    if progress and count >= max(show_from, PROGRESS_EVERY):
        sys.stderr.write(f"\rguard: judged {count:,} requests\n")


def judge_line(
    policy: CompiledPolicy, raw: bytes, number: int, register: SubjectLookup | None = None
) -> dict[str, object]:
    """One batch line -> its decision as a JSON-ready mapping with the line number."""
    request, problem = parse_batch_line(raw)
    if problem is not None:
        decision = denial(Reason.MALFORMED_REQUEST, request, policy.version, detail=problem)
    else:
        assert request is not None
        decision = _decide(policy, request, register)
    record = decision.to_dict()
    record["line"] = number
    if problem is not None:
        record["error"] = problem
    return record


def parse_batch_line(raw: bytes) -> tuple[Request | None, str | None]:
    """Parse and validate one request line; on failure say which field was wrong.

    Returns the request (or, on failure, what could be read of it) and the problem.
    """
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "line is not UTF-8"
    except ValueError as exc:
        return None, f"not JSON: {exc.args[0] if exc.args else exc}"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    caller, purpose = data.get("caller"), data.get("purpose")
    categories, action, subject = data.get("categories"), data.get("action", "read"), \
        data.get("subject")
    partial = Request(
        caller if isinstance(caller, str) else "",
        purpose if isinstance(purpose, str) else "",
        tuple(categories) if isinstance(categories, list) and _str_list(categories) else (),
    )
    unknown = sorted(set(data) - BATCH_KEYS)
    problem: str | None = None
    if unknown:
        problem = f"unknown field {unknown[0]!r}"
    elif not isinstance(caller, str) or not caller:
        problem = "field 'caller' must be a non-empty string"
    elif not isinstance(purpose, str) or not purpose:
        problem = "field 'purpose' must be a non-empty string"
    elif not _str_list(categories) or not categories:
        problem = "field 'categories' must be a non-empty list of non-empty strings"
    elif action not in ("read", "write"):
        problem = "field 'action' must be 'read' or 'write'"
    elif subject is not None and (not isinstance(subject, str) or not subject):
        problem = "field 'subject' must be a non-empty string"
    if problem is not None:
        return partial, problem
    request = Request(partial.caller, partial.purpose, partial.categories, Action(action), subject)
    return request, None


def _str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)

