"""Lint and load cost of large policies, against casbin's own load of the same files.

    .venv/bin/python bench/policy_lint.py            # 1,000 / 10,000 / 100,000 grants
    .venv/bin/python bench/policy_lint.py 100000     # one size

For each size: the shipped policy plus generated internal callers, each with 20
distinct grants (leaf purpose x leaf category inside its ceiling, so nothing is
redundant). Prints parse, lint, full load+compile (``compile_source``: parse,
lint, compile) and ``casbin.Enforcer`` loading the same files (the baseline),
best of 3, and the time of ``guard policy diff`` between the policy and itself
with one grant removed.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import casbin

from guard.policy._compile import parse_model
from guard.policy._diff import diff_policies
from guard.policy._lint import lint_rows
from guard.policy._load import compile_source
from guard.policy._source import PolicySource, parse_rows

SHIPPED = Path(__file__).resolve().parent.parent / "policies"
GRANTS_PER_CALLER = 20


def generate(grants: int) -> str:
    """The shipped rules plus ``grants`` generated grants."""
    base = compile_source(PolicySource((SHIPPED / "model.conf").read_text(),
                                       (SHIPPED / "rules.csv").read_text(), "m", "r"))
    leaves = [k for k, p in base.purposes.items() if p.declarable and not p.consent_only
              and not any(q.declarable and k in q.ancestors[1:] for q in base.purposes.values())]
    pairs = sorted((p, c) for p in leaves for c in base.purposes[p].ceiling
                   if not any(c in cat.ancestors[1:] for cat in base.categories.values()))
    rng = random.Random(7)
    lines = [(SHIPPED / "rules.csv").read_text()]
    for n in range(grants // GRANTS_PER_CALLER):
        caller = f"svc:gen{n}"
        lines += [f"g4, {caller}, internal", f"g5, {caller}, GB"]
        lines += [f"p, {caller}, {p}, {c}, read" for p, c in rng.sample(pairs, GRANTS_PER_CALLER)]
    return "\n".join(lines) + "\n"


def best(fn: Callable[[], object], runs: int = 3) -> float:
    """Best wall time of ``runs`` calls, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(grants: int) -> None:
    """Print one row of the table."""
    model = (SHIPPED / "model.conf").read_text()
    rules = generate(grants)
    source = PolicySource(model, rules, "model.conf", "rules.csv")
    parsed = parse_model(model, "model.conf")
    rows = parse_rows(rules, "rules.csv")
    findings = lint_rows(source, rows, parsed)
    assert [f.code for f in findings] == ["transfer-not-safeguarded"], findings[:3]
    t_parse = best(lambda: parse_rows(rules, "rules.csv"))
    t_lint = best(lambda: lint_rows(source, rows, parsed))
    t_load = best(lambda: compile_source(source))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.conf").write_text(model)
        (Path(tmp) / "rules.csv").write_text(rules)
        t_casbin = best(lambda: casbin.Enforcer(str(Path(tmp) / "model.conf"),
                                                str(Path(tmp) / "rules.csv")), runs=1)
    old = compile_source(source)
    victim = next(line for line in rules.splitlines() if line.startswith("p, svc:gen0,"))
    new = compile_source(PolicySource(model, rules.replace(victim + "\n", ""), "m", "r"))
    t_diff = best(lambda: diff_policies(old, new), runs=1)
    print(f"| {grants:>7,} | {t_parse:6.3f} | {t_lint:6.3f} | {t_load:6.3f} | {t_casbin:7.3f} | "
          f"{t_load / t_casbin:5.2f}x | {t_diff:6.3f} |")


def main() -> None:
    """Run the sizes named on the command line (default 1k, 10k, 100k)."""
    sizes = [int(a) for a in sys.argv[1:]] or [1_000, 10_000, 100_000]
    print("| grants | parse s | lint s | load+compile s | casbin load s | ratio | diff s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in sizes:
        measure(size)


if __name__ == "__main__":
    main()
