"""Cost of the subject register: decision time and memory at a million subjects.

In one run it builds a register of N subjects with entries (default 1,000,000:
one to three entries each, random kinds, purposes and dates) and measures:

- memory: the bytes the register's index holds (keys, offsets, packed states,
  bitmap), and the process's resident memory before and after loading it;
- the engine: µs per ``decide`` for the same granted request naming no subject,
  naming a subject with no entry (a fresh id each call, from a pool of 20,000),
  and naming a subject with entries; repetitions interleaved, so load on the
  machine hits all three alike. Each figure is the median repetition's mean over
  a loop of ``--calls`` decisions, timed in CPU time of the thread
  (``thread_time_ns``), so time other jobs of a shared machine take while this
  one waits for a core does not count.

Targets (POLICY-SPEC §4, the subject-rights issue): a subject with no entry costs
≤ 2 µs more than no subject; the index holds ≤ 64 MB per million subjects.

Usage: ``.venv/bin/python bench/subjects.py [--subjects 1000000] [--calls 20000]
[--reps 15]``
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from datetime import date, timedelta

from guard._types import Action, Request
from guard.engine import decide
from guard.policy import load_policy
from guard.rights import EntryKind, Record, Register, fold
from guard.rights._index import split_digest

KINDS = (EntryKind.OBJECTION, EntryKind.CONSENT_GRANTED, EntryKind.RESTRICTION,
         EntryKind.ERASURE_REQUESTED, EntryKind.END_OF_RELATIONSHIP)
PURPOSES = ("marketing", "marketing.advertising", "marketing.third_party",
            "order.processing.debt_recovery", "analytics.improvement")
REQUEST = Request("svc:crm", "relationship.management", ("contact.email",), Action.READ)


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux)."""
    with open(f"/proc/{os.getpid()}/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def build(register: Register, count: int, rng: random.Random) -> list[str]:
    """Fill ``register`` with ``count`` subjects with entries; return some of their ids."""
    start = date(2018, 1, 1)

    def states() -> object:
        for n in range(count):
            subject = f"member-{n}"
            state: tuple[Record, ...] = ()
            for _ in range(rng.randint(1, 3)):
                kind = rng.choice(KINDS)
                purpose = rng.choice(PURPOSES) if kind.names_purpose else ""
                state = fold(state, Record(kind, purpose,
                                           start + timedelta(days=rng.randrange(4000))))
            yield (*split_digest(bytes.fromhex(register.pseudonym(subject))), state)

    register.index.load(states())  # type: ignore[arg-type]
    return [f"member-{rng.randrange(count)}" for _ in range(1000)]


def loop(policy: object, register: Register, requests: list[Request], calls: int) -> float:
    """Mean µs per decision over ``calls`` decisions cycling through ``requests``."""
    n = len(requests)
    start = time.thread_time_ns()
    for i in range(calls):
        decide(policy, requests[i % n], register)  # type: ignore[arg-type]
    return (time.thread_time_ns() - start) / calls / 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(7)
    policy = load_policy(None)
    register = Register(b"bench-key-" * 4)

    gc.collect()
    before = rss_mb()
    t0 = time.perf_counter()
    members = build(register, args.subjects, rng)
    load_s = time.perf_counter() - t0
    gc.collect()
    after = rss_mb()
    index_mb = register.index.nbytes() / 1e6

    no_subject = [REQUEST]
    unknown = [Request(REQUEST.caller, REQUEST.purpose, REQUEST.categories, REQUEST.action,
                       f"stranger-{i}") for i in range(20_000)]
    known = [Request(REQUEST.caller, REQUEST.purpose, REQUEST.categories, REQUEST.action, m)
             for m in members]
    for requests in (no_subject, unknown, known):  # warm up
        loop(policy, register, requests, 2000)
    runs: dict[str, list[float]] = {"none": [], "no entry": [], "entries": []}
    gc.disable()
    try:
        for _ in range(args.reps):
            runs["none"].append(loop(policy, register, no_subject, args.calls))
            runs["no entry"].append(loop(policy, register, unknown, args.calls))
            runs["entries"].append(loop(policy, register, known, args.calls))
    finally:
        gc.enable()
    p50 = {k: statistics.median(v) for k, v in runs.items()}
    extra = statistics.median(b - a for a, b in zip(runs["none"], runs["no entry"],
                                                    strict=True))
    per_million = index_mb * 1_000_000 / args.subjects

    print(f"python {sys.version.split()[0]}, {args.subjects:,} subjects with entries "
          f"(loaded in {load_s:.1f} s), {args.reps} x {args.calls:,} calls")
    print()
    print("| subjects | index MB | RSS before MB | RSS after MB | RSS growth MB "
          "| no subject µs | subject, no entry µs | subject with entries µs "
          "| extra for a subject µs |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {args.subjects:,} | {index_mb:.1f} | {before:.0f} | {after:.0f} "
          f"| {after - before:.0f} | {p50['none']:.2f} | {p50['no entry']:.2f} "
          f"| {p50['entries']:.2f} | {extra:.2f} |")
    print()
    checks = [("a subject with no entry costs ≤ 2 µs more than no subject",
               extra <= 2.0, f"{extra:.2f} µs"),
              ("the index holds ≤ 64 MB per million subjects with entries",
               per_million <= 64, f"{per_million:.1f} MB per million")]
    for text, ok, value in checks:
        print(f"{'PASS' if ok else 'MISS'}  {text}: {value}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
