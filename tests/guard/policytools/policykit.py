"""Helpers for the policy tool tests: copies of the shipped policy, edited in tmp dirs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "policies"
RULES = "rules.csv"


def copy_policy(dest: Path, *, routes: bool = False) -> Path:
    """A copy of the shipped model.conf and rules.csv (and routes.csv if asked) in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    names = ["model.conf", RULES] + (["routes.csv"] if routes else [])
    for name in names:
        shutil.copy(SHIPPED / name, dest / name)
    return dest


def edit_rules(folder: Path, *, add: Sequence[str] = (), drop: Sequence[str] = (),
               replace: dict[str, str] | None = None) -> None:
    """Append lines, drop lines (exact, after stripping), replace lines in rules.csv."""
    path = folder / RULES
    lines = path.read_text().splitlines()
    wanted = {d.strip() for d in drop}
    missing = wanted - {line.strip() for line in lines}
    assert not missing, f"lines to drop not found: {missing}"
    lines = [line for line in lines if line.strip() not in wanted]
    for old, new in (replace or {}).items():
        hits = [i for i, line in enumerate(lines) if line.strip() == old]
        assert len(hits) == 1, f"{old!r} found {len(hits)} times"
        lines[hits[0]] = new
    path.write_text("\n".join([*lines, *add]) + "\n")


def line_of(folder: Path, text: str, name: str = RULES) -> int:
    """1-based number of the (single) line that reads ``text``."""
    lines = (folder / name).read_text().splitlines()
    hits = [i for i, line in enumerate(lines, start=1) if line.strip() == text.strip()]
    assert len(hits) == 1, f"{text!r} found {len(hits)} times"
    return hits[0]


def column_of(folder: Path, line: int, value: str, name: str = RULES) -> int:
    """1-based column where ``value`` starts as a comma-separated value of ``line``."""
    raw = (folder / name).read_text().splitlines()[line - 1]
    found = re.search(r"(^|,)\s*(" + re.escape(value) + r")\s*(,|$)", raw)
    assert found is not None, (value, raw)
    return found.start(2) + 1


@dataclass(frozen=True)
class Run:
    """A finished ``guard`` command."""

    code: int
    out: str
    err: str


def guard(*args: str | Path, cwd: Path | None = None) -> Run:
    """Run the installed ``guard`` command in a subprocess."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "guard"), *map(str, args)],
        capture_output=True, text=True, cwd=cwd, check=False, timeout=60,
    )
    return Run(done.returncode, done.stdout, done.stderr)


_DRIVER = """
import contextlib, io, json, os, sys, traceback
from guard.cli import main
results = []
for args, cwd in json.loads(sys.stdin.read()):
    out, err = io.StringIO(), io.StringIO()
    os.chdir(cwd)
    sys.argv = ["guard", *args]
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            code = -1
            err.write(traceback.format_exc())
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def guard_batch(calls: dict[str, tuple[Sequence[str | Path], Path]]) -> dict[str, Run]:
    """Run many ``guard`` command lines through its real entry point in one fresh process.

    ``calls`` maps a name to (arguments, working folder). An exception escaping the
    entry point is recorded as exit code -1 with its traceback on stderr.
    """
    names = list(calls)
    payload = json.dumps([[[str(a) for a in calls[n][0]], str(calls[n][1])] for n in names])
    done = subprocess.run([sys.executable, "-c", _DRIVER], input=payload, capture_output=True,
                          text=True, check=True, timeout=120, cwd=calls[names[0]][1])
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {n: Run(*r) for n, r in zip(names, results, strict=True)}
