"""CPU of the ``guard`` command's start: the import, ``--help``, a check, a mistake.

Each command runs in a fresh interpreter (``.pyc`` written first), ``--runs`` times,
the trees interleaved; CPU is the child's user + system time (``getrusage``, as
``/usr/bin/time -f %U+%S``). The floors, in the same run: the interpreter alone
(``python -c pass``) and what ``guard check`` cannot do without (typer, the
settings' pydantic, the policy compiler and the engine). With ``--baseline TREE``
(a checkout, e.g. the session's start) the same commands from that tree, and the
ratio.

Usage: python bench/cli_start.py [--runs 11] [--baseline TREE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_GUARD = 'import sys; sys.argv[0] = "guard"; from guard.cli import main; main()'
COMMANDS: dict[str, tuple[str, list[str]]] = {
    "python -c pass (floor)": ("pass", []),
    "typer, settings, policy, engine (floor)":
        ("import typer, guard.config, guard.policy, guard.engine", []),
    "import guard.cli": ("import guard.cli", []),
    "guard --help": (_GUARD, ["--help"]),
    "guard check": (_GUARD, ["check", "--caller", "svc:crm", "--purpose",
                             "relationship.management", "--category", "contact.email"]),
    "guard check --bogus": (_GUARD, ["check", "--bogus"]),
}


def cpu(tree: Path, code: str, args: list[str], folder: str) -> float:
    """Seconds of CPU (user + system) of one ``python -c code args`` with ``tree`` first."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=folder,
                   capture_output=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--baseline", type=Path, metavar="TREE")
    args = parser.parse_args()
    trees = {"this": Path(__file__).resolve().parents[1]}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    seconds: dict[tuple[str, str], list[float]] = {(t, c): [] for t in trees for c in COMMANDS}
    with tempfile.TemporaryDirectory() as folder:  # no ./policies, no guard.toml
        for tree in trees.values():
            cpu(tree, "import guard.cli", [], folder)  # .pyc written
        for _ in range(args.runs):
            for name, (code, argv) in COMMANDS.items():
                for label, tree in trees.items():
                    seconds[(label, name)].append(cpu(tree, code, argv, folder))
    print(f"median CPU of {args.runs} runs; load average {os.getloadavg()}")
    for name in COMMANDS:
        mine = statistics.median(seconds[("this", name)])
        line = f"{name:42s} {mine:6.3f} s"
        if "baseline" in trees:
            base = statistics.median(seconds[("baseline", name)])
            line += f"   baseline {base:6.3f} s   ratio {mine / base:5.2f}"
        print(line)


if __name__ == "__main__":
    main()
