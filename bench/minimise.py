"""What minimising a response costs: the same 20-field route in deny and minimise mode.

One FastAPI app serves a 20-field customer (every field a category of the shipped
policy) twice: ``/deny/{id}`` (``@guarded(categories=...)``, the whole response or
nothing) and ``/minimise/{id}`` (``@guarded(mode="minimise")``: decided per category,
the body buffered and filtered). Requests go through the whole ASGI stack in this
process, one at a time, alternating between the routes so drift hits both alike.
The deny route is asked by svc:support under rights.request (every personal
category: all 20 fields sent); the minimise route by the same caller (all 20
released) and by svc:crm under relationship.management (10 released, 10
withheld). The handler and FastAPI's serialisation of the 20 fields are the same
work on every route; the difference is the guard's: the per-category decision,
buffering, parsing, filtering and re-serialising the body.

The guard decides with the compiled policy (``Guard``'s own per-category path,
which remembers a judgement while the subject register has no entry for the
subject) and records nothing: the audit write is the same for every route and
measured by bench/http.py and bench/audit.py.

Usage: ``.venv/bin/python bench/minimise.py [--requests 20000] [--reps 5]``
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/http.py would shadow the stdlib ``http`` for a script run from this folder.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
if str(Path(__file__).resolve().parent.parent) not in sys.path:  # the repository's bench
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import json
import statistics
import time
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel, create_model

from bench._stub import NoAudit
from guard._guard import Guard, Ruling
from guard._types import HttpContext, Request
from guard.config import Settings
from guard.engine import decide
from guard.policy import load_policy
from middleware import Category, GuardMiddleware, RouteTable, guarded
from middleware.identity import Caller

POLICY = load_policy(Path(__file__).resolve().parent.parent / "policies")
# Released to svc:crm for relationship.management; WITHHELD is outside that purpose.
RELEASED = ("identity.name", "identity.username", "identity.date_of_birth", "identity.title",
            "contact.email", "contact.phone", "contact.billing_address",
            "contact.delivery_address", "profile.interests", "profile.preferences")
WITHHELD = ("financial.payment_card", "financial.bank_account", "transaction.payments",
            "transaction.purchases", "technical.ip_address", "technical.device",
            "technical.login", "usage.website", "usage.product", "technical.browser")
CATEGORIES = RELEASED + WITHHELD  # 20 fields, 10 released to svc:crm


class _Holder:
    current = POLICY


class _Guard(NoAudit):
    """The guard's decisions (``Guard``'s own code), without the audit write."""

    holder = _Holder()
    register = None

    def __init__(self) -> None:
        self._category_cache: dict[Any, Any] = {}

    def decide(self, request: Request, http: HttpContext | None = None, *,
               per_category: bool = False, current: Any = None) -> Ruling:
        if per_category:
            judged, _detail = Guard._judge_categories(self, request)  # type: ignore[arg-type]
            return Ruling(judged.decision, request, judged, {})
        return Ruling(decide(POLICY, request), request, None, {})


class _Auth:
    """The caller named in ``x-caller`` (token checks are the same for every route)."""

    header_names = ("x-caller",)
    development = False

    def authenticate(self, headers: Any, peer: str | None) -> Caller:
        return Caller(headers["x-caller"], None, "jwt")


def _model(cats: tuple[str, ...], name: str) -> type[BaseModel]:
    fields: dict[str, Any] = {f"f{i}": (Annotated[str, Category(c)], ...)
                              for i, c in enumerate(cats)}
    return create_model(name, customer_id=(str, ...), **fields)


def build() -> FastAPI:
    full = _model(CATEGORIES, "Full")
    body = {"customer_id": "c-1", **{f"f{i}": f"value {i} of {c}" for i, c in
                                    enumerate(CATEGORIES)}}
    app = FastAPI()

    @app.get("/deny/{cid}", response_model=full)
    @guarded(subject="cid")
    async def deny(cid: str) -> Any:
        return body

    @app.get("/minimise/{cid}", response_model=full)
    @guarded(subject="cid", mode="minimise")
    async def minimise(cid: str) -> Any:
        return body

    app.add_middleware(GuardMiddleware, guard=_Guard(), routes=RouteTable(()),
                       authenticator=_Auth(), settings=Settings())  # type: ignore[arg-type]
    return app


SUPPORT = (b"svc:support", b"rights.request")
CRM = (b"svc:crm", b"relationship.management")
RUNS = {"deny, all 20 sent": ("/deny/c-1", SUPPORT),
        "minimise, all 20 released": ("/minimise/c-1", SUPPORT),
        "minimise, 10 released, 10 withheld": ("/minimise/c-1", CRM)}


async def _call(app: Any, path: str, who: tuple[bytes, bytes]) -> bytes:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [(b"host", b"svc"), (b"x-caller", who[0]),
                                              (b"x-purpose", who[1])],
             "client": ("127.0.0.1", 1), "server": ("svc", 80)}
    out: list[bytes] = []
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await app(scope, receive, send)
    assert status == [200], (path, status, out)
    return b"".join(out)


async def measure(requests: int, reps: int) -> dict[str, float]:
    app = build()
    sent = {name: len(json.loads(await _call(app, path, who))) - 1
            for name, (path, who) in RUNS.items()}
    assert list(sent.values()) == [20, 20, 10], sent
    timer = time.perf_counter_ns
    best = dict.fromkeys(RUNS, float("inf"))
    names = list(RUNS)
    for _ in range(reps):
        samples: dict[str, list[int]] = {name: [] for name in RUNS}
        for n in range(requests):
            for name in names[n % 3:] + names[:n % 3]:  # rotate the order
                path, who = RUNS[name]
                t0 = timer()
                await _call(app, path, who)
                samples[name].append(timer() - t0)
        for name, values in samples.items():
            best[name] = min(best[name], statistics.median(values) / 1000)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000, help="per route and repetition")
    parser.add_argument("--reps", type=int, default=5, help="repetitions; p50 of the best")
    args = parser.parse_args()
    best = asyncio.run(measure(args.requests, args.reps))
    base = best["deny, all 20 sent"]
    print(f"python {sys.version.split()[0]}; {args.reps} x {args.requests:,} requests per route, "
          "in process through the ASGI stack, no audit write")
    print("| route, caller | p50 µs per request | added by minimising |")
    print("| --- | ---: | ---: |")
    for name, value in best.items():
        print(f"| {name} | {value:.1f} | {value - base:+.1f} |")
    extra = max(best.values()) - base
    ok = extra <= 10
    print(f"\n{'PASS' if ok else 'MISS'}  minimising a 20-field response adds <= 10 µs: "
          f"{extra:+.1f} µs")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
