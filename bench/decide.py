"""Decision cost of the compiled engine against casbin's Enforcer, by policy size.

For generated policies of 100 .. 100,000 grants (the shipped vocabulary, ceilings and
adequacy list, plus synthetic callers with ten grants each) it measures, in one run:

- load+compile: ``load_policy(folder)`` = read, parse with pycasbin, lint, compile;
- the engine: µs per ``decide`` (p50, p99, one timer per call) and decisions/s (a tight
  loop, no per-call timer), over one-category requests near and far from the grants;
- per category: µs per ``decide_categories`` (p50) against ``decide`` on the same
  four-category requests (mostly granted, one category often not), in the same run;
- the baseline: ``casbin.Enforcer(model.conf, rules.csv).enforce`` on the same files
  and requests (sampled at large sizes: it walks every grant line on every call),
  checked to give the same answers.

Usage: ``.venv/bin/python bench/decide.py [--sizes 100,1000,10000,100000]
[--calls 10000] [--reps 5] [--casbin-calls 300] [--casbin-budget 12]``

With ``--guard``, instead: the guard's own Python per allowed read on the event loop
(``Guard.decide``, ``Guard.begin_commit`` and the resolve side: the writer's release
of the batch, the loop's wake-up by its eventfd, the future's result and the awaiting
task's wake-up), on the shipped policy with a subject register, ``GET /customers/{id}`` as
``svc:crm`` for ``relationship.management`` (identity, contact). The journal writer
is replaced by a stand-in on the same thread that takes each queued event as the
writer does and releases it with the writer's own ``_release`` (nothing is built or
written), so every instruction counted is the event loop's. Subjects are 100 ids in
turn, or a new id for every call (``--fresh-subjects``). Per piece: instructions per
call under ``valgrind --tool=callgrind`` (``--callgrind``: repeatable on a loaded
machine) or µs per call (best of ``--reps`` loops of ``--calls``), the empty loop
subtracted. ``--tree DIR`` measures another checkout's guard with the same script
(an A/B in one run). The floor is the same hand-over with no guard at all: the
writer's ``start`` and release and the loop's turn for an empty event::

    .venv/bin/python bench/decide.py --guard --callgrind --calls 1000 [--tree DIR]
    .venv/bin/python bench/decide.py --guard --calls 20000 --reps 7 [--tree DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import casbin

from guard._types import Action, Request
from guard.engine import decide, decide_categories
from guard.policy import load_policy

SHIPPED = Path(__file__).resolve().parent.parent / "policies"
# Declarable purposes none of which is an ancestor of another: grants on them never
# overlap, so the generated policy lints clean (no redundant-grant warnings).
PURPOSES = {
    "customer.registration": ("identity", "contact"),
    "order.processing.payments": ("identity", "contact", "financial", "transaction"),
    "order.processing.debt_recovery": ("identity", "contact", "financial", "transaction"),
    "relationship.management": ("identity", "contact", "profile", "marketing"),
    "promotion.prize_draw": ("identity", "contact", "profile", "usage", "marketing"),
    "business.administration": ("identity", "contact", "technical"),
    "marketing.advertising": ("identity", "contact", "profile", "usage", "marketing",
                              "technical"),
    "marketing.recommendations": ("identity", "contact", "technical", "usage", "profile",
                                  "marketing"),
    "analytics.improvement": ("technical", "usage"),
    "legal.compliance": ("identity", "contact", "financial", "transaction"),
    "rights.request": ("identity", "contact", "financial", "transaction", "technical",
                       "profile", "usage", "marketing"),
}
CHILDREN = {
    "identity": ("name", "username", "date_of_birth"), "contact": ("email", "phone"),
    "financial": ("bank_account", "payment_card"), "transaction": ("payments", "purchases"),
    "technical": ("ip_address", "login", "device"), "profile": ("interests", "orders"),
    "usage": ("website", "product"), "marketing": ("preferences",),
}
GRANTS_PER_CALLER = 10
COUNTRIES = (("GB", ""), ("GB", ""), ("IE", ""), ("US", "idta"), ("IN", "uk_addendum"))


def base_rules() -> str:
    """The shipped vocabulary, ceilings, bases and adequacy list, without its callers."""
    keep = []
    for raw in (SHIPPED / "rules.csv").read_text().splitlines():
        parts = [p.strip() for p in raw.split(",")]
        if parts[0] == "p" or parts[0] == "g4":
            continue
        if parts[0] == "g5" and len(parts) == 3 and parts[2] != "adequate":
            continue
        keep.append(raw)
    return "\n".join(keep) + "\n"


def generate(grants: int, rng: random.Random) -> tuple[str, list[tuple[str, str, str, str]]]:
    """rules.csv text with ``grants`` grant lines, and those grants."""
    combos = [(p, c, a) for p, cats in PURPOSES.items() for c in cats for a in ("read", "write")]
    lines = [base_rules()]
    made: list[tuple[str, str, str, str]] = []
    for i in range(grants // GRANTS_PER_CALLER):
        caller = f"svc:bench-{i}"
        country, mechanism = COUNTRIES[i % len(COUNTRIES)]
        party = "internal" if country == "GB" else "processor"
        lines.append(f"g4, {caller}, {party}\ng5, {caller}, {country}")
        if mechanism:
            lines.append(f"g5, {caller}, {mechanism}")
        for purpose, cat, action in rng.sample(combos, GRANTS_PER_CALLER):
            lines.append(f"p, {caller}, {purpose}, {cat}, {action}")
            made.append((caller, purpose, cat, action))
    return "\n".join(lines) + "\n", made


def requests(made: list[tuple[str, str, str, str]], count: int,
             rng: random.Random) -> list[Request]:
    """One-category requests: half on a grant (child category), half anywhere."""
    callers = sorted({m[0] for m in made})
    out = []
    for n in range(count):
        if n % 2 == 0:
            caller, purpose, cat, action = rng.choice(made)
        else:
            caller = rng.choice(callers)
            purpose = rng.choice(list(PURPOSES))
            cat = rng.choice(list(CHILDREN))
            action = rng.choice(("read", "write"))
        key = f"{cat}.{rng.choice(CHILDREN[cat])}" if rng.random() < 0.7 else cat
        out.append(Request(caller, purpose, (key,), Action(action)))
    return out


def multi_requests(made: list[tuple[str, str, str, str]], count: int,
                   rng: random.Random) -> list[Request]:
    """Four-category requests: three granted to the caller for the purpose, one anywhere."""
    by_grant: dict[tuple[str, str, str], list[str]] = {}
    for caller, purpose, cat, action in made:
        by_grant.setdefault((caller, purpose, action), []).append(cat)
    keys = sorted(by_grant)
    out = []
    for _ in range(count):
        caller, purpose, action = rng.choice(keys)
        cats = [f"{c}.{rng.choice(CHILDREN[c])}" for c in by_grant[(caller, purpose, action)]]
        cats = [*(cats * 3)[:3], rng.choice(list(CHILDREN))]
        out.append(Request(caller, purpose, tuple(dict.fromkeys(cats)), Action(action)))
    return out


def decide_split(policy: object, request: Request) -> list[bool]:
    """What ``decide_categories`` replaces: one ``decide`` per category."""
    return [decide(policy, Request(request.caller, request.purpose, (c,),  # type: ignore[arg-type]
                                   request.action)).allowed for c in request.categories]


def p50_us(fn: object, reqs: list[Request], policy: object, calls: int, reps: int) -> float:
    """Best-of-``reps`` median µs of ``fn(policy, request)`` over ``calls`` calls."""
    call = fn  # type: ignore[assignment]
    timer = time.perf_counter_ns
    best = float("inf")
    for _ in range(reps):
        samples: list[float] = []
        for n in range(calls):
            request = reqs[n % len(reqs)]
            t0 = timer()
            call(policy, request)  # type: ignore[operator]
            samples.append(timer() - t0)
        best = min(best, percentile(samples, 0.50) / 1000)
    return best


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(size: int, args: argparse.Namespace, rng: random.Random) -> dict[str, float]:
    rules, made = generate(size, rng)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "model.conf").write_text((SHIPPED / "model.conf").read_text())
        (folder / "rules.csv").write_text(rules)
        gc.collect()
        start = time.perf_counter()
        policy = load_policy(folder)
        load_s = time.perf_counter() - start
        assert policy.compiled, "the generated policy must take the compiled path"
        start = time.perf_counter()
        enforcer = casbin.Enforcer(str(folder / "model.conf"), str(folder / "rules.csv"))
        casbin_load_s = time.perf_counter() - start

    reqs = requests(made, 2_000, rng)
    for request in reqs[:200]:  # warm up
        decide(policy, request)
    timer = time.perf_counter_ns
    p50s: list[float] = []
    p99s: list[float] = []
    for _ in range(args.reps):  # best of N: other processes share this machine
        engine_ns: list[float] = []
        for n in range(args.calls):
            request = reqs[n % len(reqs)]
            t0 = timer()
            decide(policy, request)
            engine_ns.append(timer() - t0)
        p50s.append(percentile(engine_ns, 0.50) / 1000)
        p99s.append(percentile(engine_ns, 0.99) / 1000)
    loops = max(1, args.calls // len(reqs))
    start = time.perf_counter()
    for _ in range(loops):
        for request in reqs:
            decide(policy, request)
    per_second = loops * len(reqs) / (time.perf_counter() - start)

    casbin_ns: list[float] = []
    mismatches = 0
    deadline = time.perf_counter() + args.casbin_budget
    for n in range(args.casbin_calls):
        request = reqs[n % len(reqs)]
        t0 = timer()
        answer = enforcer.enforce(request.caller, request.purpose, request.categories[0],
                                  request.action.value)
        casbin_ns.append(timer() - t0)
        mismatches += answer != decide(policy, request).allowed
        if n >= 19 and time.perf_counter() > deadline:
            break
    allowed = sum(decide(policy, r).allowed for r in reqs) / len(reqs)
    multi = multi_requests(made, 2_000, rng)
    for request in multi[:200]:  # warm up
        decide_categories(policy, request)
    m_decide = p50_us(decide, multi, policy, args.calls, args.reps)
    m_each = p50_us(decide_categories, multi, policy, args.calls, args.reps)
    m_split = p50_us(decide_split, multi, policy, args.calls, args.reps)
    return {
        "m_decide": m_decide, "m_each": m_each, "m_split": m_split,
        "grants": size, "load_s": load_s, "casbin_load_s": casbin_load_s,
        "p50": min(p50s), "p99": statistics.median(p99s),
        "per_s": per_second,
        "c_p50": statistics.median(casbin_ns) / 1000, "c_p99": percentile(casbin_ns, 0.99) / 1000,
        "c_n": len(casbin_ns), "mismatches": mismatches, "allowed": allowed,
    }


GUARD_PIECES = ("floor: a future resolved through the writer's release (no guard)",
                "Register.lookup (subject's entries)", "Guard.decide",
                "decide + begin_commit (future resolved in place)",
                "decide + begin_commit + resolve (a loop turn)")


def guard_pieces(tree: Path, fresh: bool) -> tuple[list[Any], Any]:
    """The measured coroutines (the empty one first) and the guard, from ``tree``'s code."""
    sys.path.insert(0, str(tree.resolve()))
    for name in [m for m in sys.modules if m == "guard" or m.startswith("guard.")]:
        del sys.modules[name]
    from guard._guard import Guard
    from guard._types import Action as TreeAction
    from guard._types import HttpContext
    from guard._types import Request as TreeRequest
    from guard.audit._event import EventKind
    from guard.audit._fields import Pseudonyms
    from guard.audit._jtrail import JournalTrail
    from guard.audit._jwriter import JournalWriter
    from guard.policy import load_policy as tree_load_policy
    from guard.policy._holder import PolicyHolder
    from guard.rights import Register

    key = b"k" * 32
    policy = tree_load_policy(tree / "policies")
    # The writer's producer side as it is, its thread replaced by ``drain`` below (the
    # attributes of every tree measured: `_cond` before the eventfd hand-over).
    writer = JournalWriter.__new__(JournalWriter)
    writer._queue, writer._wakers = deque(), {}
    writer._closed = writer._stopped = writer._idle = False
    writer._lock = threading.Lock()
    writer._cond = threading.Condition(writer._lock)
    writer._pseudonyms = Pseudonyms(key)  # the guard shares its register's digests with it
    trail = JournalTrail.__new__(JournalTrail)
    trail.writer = writer
    register = Register(key)
    register.apply(register.pseudonym("someone-else"), [])
    guard = Guard(PolicyHolder(lambda: policy), trail, hmac_key=key, register=register)
    http = HttpContext("GET", "/customers/{customer_id}")
    count = 400_000 if fresh else 100
    requests = [TreeRequest("svc:crm", "relationship.management", ("identity", "contact"),
                            TreeAction.READ, f"c-{n:06d}") for n in range(count)]
    if not guard.decide(requests[0], http).decision.allowed:
        raise SystemExit("the measured request is not allowed")
    queue = writer._queue
    turn = [0]

    def next_request() -> Any:
        i = turn[0] = (turn[0] + 1) % count
        return requests[i]

    def drain() -> None:
        """What the writer does for the producers once a batch is durable."""
        items = [queue.popleft() for _ in range(len(queue))]
        for item in items:
            item.result = item.fields.get("event_id") or "id"
        writer._release(items)

    async def empty() -> None:
        next_request()

    async def floor() -> None:
        next_request()
        future = writer.start(EventKind.DECISION, {})
        drain()
        await future

    async def lookup() -> None:
        register.lookup(next_request().subject)

    async def decided() -> None:
        guard.decide(next_request(), http)

    async def begun() -> None:
        future = guard.begin_commit(guard.decide(next_request(), http), 200)
        queue.popleft()
        future.set_result("id")

    async def committed() -> None:
        future = guard.begin_commit(guard.decide(next_request(), http), 200)
        drain()
        await future

    return [empty, floor, lookup, decided, begun, committed], guard


async def _loop_of(piece: Any, calls: int) -> None:
    for _ in range(calls):
        await piece()


def guard_counted(tree: Path, calls: int, fresh: bool) -> None:
    """Under callgrind: each piece's loop between two ``os.getppid()`` markers."""
    pieces, _guard = guard_pieces(tree, fresh)

    async def run() -> None:
        for piece in pieces:
            await _loop_of(piece, 300)
        gc.collect()
        gc.freeze()
        for piece in pieces:
            gc.collect()
            os.getppid()  # dumps what ran since the last marker
            await _loop_of(piece, calls)
            os.getppid()  # dumps the loop

    asyncio.run(run())


def guard_timed(tree: Path, calls: int, reps: int, fresh: bool) -> list[float]:
    """µs per call of each piece, the best of ``reps`` loops, the empty loop subtracted."""
    pieces, _guard = guard_pieces(tree, fresh)
    best = [float("inf")] * len(pieces)

    async def run() -> None:
        for piece in pieces:
            await _loop_of(piece, 300)
        gc.collect()
        gc.freeze()
        for _ in range(reps):
            for n, piece in enumerate(pieces):
                gc.collect()
                began = time.perf_counter()
                await _loop_of(piece, calls)
                best[n] = min(best[n], (time.perf_counter() - began) / calls * 1e6)

    asyncio.run(run())
    return [b - best[0] for b in best[1:]]


def guard_callgrind(tree: Path, calls: int, fresh: bool) -> list[float]:
    """Instructions per call of each piece (the empty loop subtracted), under callgrind."""
    with tempfile.TemporaryDirectory(prefix="guard-bench-decide-") as tmp:
        out = Path(tmp) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--dump-before=os_getppid",
                   f"--callgrind-out-file={out}", sys.executable, __file__, "--guard",
                   "--inner", "--calls", str(calls), "--tree", str(tree)]
        if fresh:
            command.append("--fresh-subjects")
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"callgrind failed:\n{done.stderr[-3000:]}")
        totals = []
        for part in sorted(Path(tmp).glob("callgrind.out.*"),
                           key=lambda p: int(p.name.rsplit(".", 1)[1])):
            found = re.search(r"^(?:summary|totals):\s+(\d+)", part.read_text(), re.M)
            totals.append(int(found.group(1)) if found else 0)
    loops = [t / calls for t in totals[1::2]]  # dump 1: start-up; then a loop, a collection
    return [n - loops[0] for n in loops[1:]]


def guard_main(args: argparse.Namespace) -> int:
    """``--guard``: the guard's Python per allowed read (see the module's docstring)."""
    if args.inner:
        guard_counted(args.tree, args.calls, args.fresh_subjects)
        return 0
    began = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load = os.getloadavg()
    if args.callgrind:
        if shutil.which("valgrind") is None:
            raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
        values, unit = guard_callgrind(args.tree, args.calls, args.fresh_subjects), "instr"
    else:
        values, unit = guard_timed(args.tree, args.calls, args.reps, args.fresh_subjects), "µs"
    print(f"{began}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; tree {args.tree.resolve()}; "
          f"{'a new subject each call' if args.fresh_subjects else '100 subjects in turn'}")
    for label, value in zip(GUARD_PIECES, values, strict=True):
        shown = f"{value:12,.0f}" if unit == "instr" else f"{value:12.2f}"
        print(f"{label:50} {shown} {unit}/call")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guard", action="store_true",
                        help="the guard's Python per allowed read instead (see above)")
    parser.add_argument("--callgrind", action="store_true",
                        help="--guard: instructions per call under valgrind's callgrind")
    parser.add_argument("--fresh-subjects", action="store_true",
                        help="--guard: a new subject id every call (not 100 in turn)")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="--guard: the checkout whose guard is measured")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="100,1000,10000,100000")
    parser.add_argument("--calls", type=int, default=10_000,
                        help="engine calls per repetition")
    parser.add_argument("--reps", type=int, default=5,
                        help="repetitions per size; p50 is the best, p99 the median")
    parser.add_argument("--casbin-calls", type=int, default=300,
                        help="Enforcer.enforce calls per size (at most)")
    parser.add_argument("--casbin-budget", type=float, default=12.0,
                        help="seconds of Enforcer.enforce per size (at least 20 calls)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.guard:
        return guard_main(args)
    rng = random.Random(args.seed)
    rows = []
    print(f"python {sys.version.split()[0]}, casbin Enforcer vs compiled engine; "
          f"{args.reps} x {args.calls:,} engine calls per size (p50: best repetition, "
          f"p99: median repetition)", flush=True)
    header = ("| grants | load+compile s | casbin load s | engine p50 µs | engine p99 µs "
              "| decisions/s | casbin p50 µs | casbin p99 µs | casbin calls | casbin/engine "
              "(p50) | allowed | mismatches | 4 categories: decide p50 µs "
              "| one decide per category p50 µs | decide_categories p50 µs |")
    print(header)
    print("|" + " ---: |" * 15)
    for size in (int(s) for s in args.sizes.split(",")):
        row = measure(size, args, rng)
        rows.append(row)
        print(f"| {size:,} | {row['load_s']:.3f} | {row['casbin_load_s']:.3f} "
              f"| {row['p50']:.2f} | {row['p99']:.2f} | {row['per_s']:,.0f} "
              f"| {row['c_p50']:,.0f} | {row['c_p99']:,.0f} | {row['c_n']:.0f} "
              f"| {row['c_p50'] / row['p50']:,.0f}x | {row['allowed']:.0%} "
              f"| {row['mismatches']:.0f} | {row['m_decide']:.2f} | {row['m_split']:.2f} "
              f"| {row['m_each']:.2f} |",
              flush=True)

    by_size = {int(r["grants"]): r for r in rows}
    print()
    verdicts = []
    if 10_000 in by_size:
        r = by_size[10_000]
        verdicts.append(("engine p50 at 10,000 grants <= 5 µs", f"{r['p50']:.2f} µs",
                         r["p50"] <= 5))
        verdicts.append(("decide_categories p50 at 10,000 grants <= one decide per category",
                         f"{r['m_each']:.2f} µs vs {r['m_split']:.2f} µs",
                         r["m_each"] <= r["m_split"]))
        ratio = r["c_p50"] / r["p50"]
        verdicts.append(("faster than Enforcer.enforce at 10,000 grants >= 1,000x",
                         f"{ratio:,.0f}x", ratio >= 1000))
    if 100 in by_size and 100_000 in by_size:
        growth = by_size[100_000]["p50"] / by_size[100]["p50"]
        verdicts.append(("p50 growth 100 -> 100,000 grants <= 1.5x", f"{growth:.2f}x",
                         growth <= 1.5))
        c_growth = by_size[100_000]["c_p50"] / by_size[100]["c_p50"]
        verdicts.append(("(Enforcer.enforce growth 100 -> 100,000, for reference)",
                         f"{c_growth:,.0f}x", True))
    if 100_000 in by_size:
        r = by_size[100_000]
        verdicts.append(("load+compile of 100,000 grants <= 3 s", f"{r['load_s']:.2f} s",
                         r["load_s"] <= 3))
    for text, value, ok in verdicts:
        print(f"{'PASS' if ok else 'MISS'}  {text}: {value}")
    if any(r["mismatches"] for r in rows):
        print("MISMATCH: the engine and casbin disagreed on some requests")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
