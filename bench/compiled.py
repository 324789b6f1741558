"""What compiling a read's hot path with mypyc buys on the event loop, against pure Python.

Copies this checkout's ``guard/``, ``middleware/``, ``examples/`` and ``policies/`` to
a temporary folder, compiles the modules a guarded read runs on the event loop with
mypyc (the code is mypy strict; mypy, and so mypyc, is pinned) into extension modules
beside their sources (an extension module is imported before a ``.py`` of the same
name), checks that each one is imported compiled, then measures both trees in the
same run with ``bench/http_loop.py``:

- under callgrind, the event loop thread's instructions per guarded read (32 at a
  time, the example service with its journal) and per guarded write (one at a time);
- in process, requests per second and the loop's CPU per read, pure and compiled
  tree by turns, ``--rounds`` times each; the medians and their ratio.

Needs a C compiler and Python's headers (``apt-get install gcc``; ``python3-config
--includes``), and valgrind for the instruction counts. Nothing of the checkout is
changed: the compiled copy lives in the temporary folder (``--keep`` keeps it).

Usage: python bench/compiled.py [--modules guard/_guard.py,...] [--requests 1280]
       [--write-requests 600] [--ab-requests 3200] [--rounds 3] [--no-callgrind]
       [--no-ab] [--keep]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds http.py: as a script, its folder must not shadow the stdlib ``http``.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

import argparse
import re
import shutil
import statistics
import subprocess
import sysconfig
import tempfile
import time

HERE = Path(__file__).resolve().parent.parent
LOOP = HERE / "bench" / "http_loop.py"
COPIED = ("guard", "middleware", "examples", "policies")
HOT_PATH = (
    "guard/_guard.py", "guard/_cells.py", "guard/_types.py", "guard/engine.py",
    "guard/audit/_event.py", "guard/audit/_jtrail.py", "guard/audit/_otel.py",
    "guard/policy/_holder.py", "guard/rights/_register.py",
    "middleware/_enforce.py", "middleware/_plan.py", "middleware/_private.py",
    "middleware/_record.py", "middleware/_span.py", "middleware/asgi.py",
    "middleware/identity.py",
)
"""What a guarded read and write run on the loop (``sys.setprofile`` of ``http_loop.py``),
less what mypyc cannot compile or run (see docs/performance.md)."""

_BUILD = """
import sys
from setuptools import setup
from mypyc.build import mypycify
setup(name="guard-compiled", ext_modules=mypycify(sys.argv[1:], opt_level="3"),
      script_args=["build_ext", "--inplace"])
"""
_IMPORTED = """
import importlib, sys
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    if not module.__file__.endswith(".so"):
        sys.exit(f"{name} was imported from {module.__file__}, not compiled")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default=",".join(HOT_PATH),
                        help="comma-separated source files to compile (default: the hot path)")
    parser.add_argument("--requests", type=int, default=1280,
                        help="reads counted under callgrind")
    parser.add_argument("--write-requests", type=int, default=600,
                        help="writes counted under callgrind (one at a time)")
    parser.add_argument("--ab-requests", type=int, default=3200,
                        help="reads per in-process round")
    parser.add_argument("--rounds", type=int, default=3, help="in-process rounds per tree")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    parser.add_argument("--no-ab", action="store_true", help="skip the in-process requests/s")
    parser.add_argument("--keep", action="store_true", help="keep the compiled copy")
    args = parser.parse_args()
    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    _need_compiler()
    work = Path(tempfile.mkdtemp(prefix="guard-compiled-"))
    try:
        tree = work / "tree"
        began = time.monotonic()
        build(tree, modules)
        print(f"compiled {len(modules)} modules with mypyc in {time.monotonic() - began:.0f} s "
              f"into {tree}: {', '.join(modules)}")
        if not args.no_callgrind:
            counts(tree, args.requests, args.write_requests)
        if not args.no_ab:
            throughput(tree, args.ab_requests, args.rounds)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _need_compiler() -> None:
    """Exit with one readable line when the C compiler or Python's headers are missing."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        raise SystemExit(f"compiled.py: no C compiler ({compiler}): apt-get install gcc")
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        raise SystemExit(f"compiled.py: Python's headers are missing ({headers})")


def build(tree: Path, modules: list[str]) -> None:
    """Copy the checkout's packages to ``tree`` and compile ``modules`` there with mypyc.

    Args:
        tree: The folder of the compiled copy (made here).
        modules: Source files relative to the checkout (``guard/_guard.py``).
    """
    tree.mkdir(parents=True)
    for name in COPIED:
        shutil.copytree(HERE / name, tree / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    # mypyc reads mypy's settings (strict) from pyproject.toml; setuptools would read the
    # [project] table too, so the copy holds the [tool.mypy] tables alone.
    text = (HERE / "pyproject.toml").read_text()
    mypy = re.findall(r"^\[+tool\.mypy[^\n]*\n(?:(?!\[)[^\n]*\n)*", text, re.M)
    (tree / "pyproject.toml").write_text("".join(mypy))
    done = subprocess.run([sys.executable, "-c", _BUILD, *modules], cwd=tree,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        errors = [line for line in (done.stdout + done.stderr).splitlines()
                  if " error: " in line or line.startswith("error")]
        raise SystemExit("compiled.py: mypyc failed:\n" + "\n".join(
            errors or (done.stdout + done.stderr).splitlines()[-30:]))
    names = [m.removesuffix(".py").replace("/", ".") for m in modules]
    imported = subprocess.run([sys.executable, "-c", _IMPORTED, *names], cwd=tree,
                              capture_output=True, text=True, check=False)
    if imported.returncode != 0:
        raise SystemExit(f"compiled.py: {imported.stderr.strip().splitlines()[-1]}")


def _loop(tree: Path, *options: str) -> str:
    done = subprocess.run([sys.executable, str(LOOP), "--tree", str(tree), *options],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"compiled.py: http_loop.py {' '.join(options)} --tree {tree} failed "
                         f"({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def counts(tree: Path, reads: int, writes: int) -> None:
    """Instructions of the loop's thread per read and per write, pure and compiled."""
    for label, options in (("read, 32 at a time", ("--requests", str(reads))),
                           ("write, one at a time", ("--requests", str(writes), "--write",
                                                     "--concurrent", "1"))):
        got = {}
        for kind, where in (("pure", HERE), ("compiled", tree)):
            out = _loop(where, "--callgrind", *options)
            found = re.search(r"event loop thread: ([\d,]+) instructions", out)
            if found is None:
                raise SystemExit(f"compiled.py: no count in:\n{out}")
            got[kind] = int(found.group(1).replace(",", ""))
        print(f"{label}: pure {got['pure']:,} instructions per request on the loop, compiled "
              f"{got['compiled']:,} ({got['compiled'] - got['pure']:+,}, "
              f"{got['compiled'] / got['pure']:.3f}x)")


def throughput(tree: Path, requests: int, rounds: int) -> None:
    """Reads per second and the loop's CPU per read, the two trees by turns."""
    seen: dict[str, list[tuple[float, float]]] = {"pure": [], "compiled": []}
    turns = (("pure", HERE), ("compiled", tree))
    for round_ in range(rounds):  # ABBA: neither tree always runs first
        for kind, where in turns if round_ % 2 == 0 else turns[::-1]:
            out = _loop(where, "--requests", str(requests))
            found = re.search(r"wall ([\d.]+) us, event loop CPU ([\d.]+) us", out)
            if found is None:
                raise SystemExit(f"compiled.py: no figures in:\n{out}")
            seen[kind].append((1e6 / float(found.group(1)), float(found.group(2))))
    medians = {kind: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
               for kind, runs in seen.items()}
    for kind, runs in seen.items():
        rates = ", ".join(f"{r:,.0f}" for r, _ in runs)
        loops = ", ".join(f"{c:.1f}" for _, c in runs)
        print(f"{kind}: {medians[kind][0]:,.0f} reads/s (rounds {rates}), event loop "
              f"{medians[kind][1]:.1f} us a read (rounds {loops})")
    print(f"compiled / pure: {medians['compiled'][0] / medians['pure'][0]:.3f}x reads/s, "
          f"{medians['compiled'][1] / medians['pure'][1]:.3f}x loop CPU a read "
          f"({requests} reads a round, {rounds} rounds each, 32 at a time)")


if __name__ == "__main__":
    main()
