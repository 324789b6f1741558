"""A customer-records service guarded by purpose-guard.

Run it with ``python -m examples.customers``: it mints development tokens,
prints ready-to-paste ``curl`` requests that show an allowed request and every
kind of denial, then serves on http://127.0.0.1:8000 with the shipped policy
and an SQLite audit trail (``audit.db``).

Each endpoint declares the data categories it touches with ``@guarded``; the
caller proves who it is with a bearer token and declares its purpose in
``X-Purpose``. ``policies/routes.csv`` declares the same routes for the sidecar.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from guard._errors import GuardError
from guard.config import Settings, load_settings
from guard.policy import resolve_policy_dir
from middleware import Category, GuardMiddleware, RouteTable, guarded, public
from middleware._disclose import proves_a_caller, readiness_view
from middleware.fields import withheld_optional
from middleware.identity import Authenticator

__all__ = ["DEMOS", "Demo", "create_app", "customers", "main"]

SUBJECT = "customer_id"


def customers(count: int = 100) -> dict[str, dict[str, Any]]:
    """Synthetic customer records, one field group per data category."""
    records = {}
    for n in range(1, count + 1):
        cid = f"c-{n:04d}"
        records[cid] = {
            "identity": {"name": f"Customer {n}", "username": f"customer{n}",
                         "date_of_birth": f"19{50 + n % 50}-0{1 + n % 9}-1{n % 10}"},
            "contact": {"email": f"customer{n}@example.com", "phone": f"+44 20 7946 {n:04d}",
                        "delivery_address": f"{n} High Street, London"},
            "financial": {"payment_card": f"**** **** **** {1000 + n}",
                          "bank_account": f"GB{n:02d} EXAM 0000 {n:04d}"},
            "profile": {"interests": ["gardening", "cycling"][n % 2:],
                        "preferences": {"newsletter": n % 3 == 0}},
            "marketing": {"communication_preferences": ["email"] if n % 2 else []},
            "technical": {"device": ["ios", "android", "web"][n % 3],
                          "timezone_location": "Europe/London"},
        }
    return records


class ContactUpdate(BaseModel):
    """The fields ``PUT /customers/{id}/contact`` may change."""

    email: str | None = None
    phone: str | None = None
    delivery_address: str | None = None


class ContactDetails(BaseModel):
    """A customer's contact details, one category per field."""

    email: Annotated[str, Category("contact.email")]
    phone: Annotated[str, Category("contact.phone")]
    billing_address: Annotated[str, Category("contact.billing_address")]
    delivery_address: Annotated[str, Category("contact.delivery_address")]


class CustomerRecord(BaseModel):
    """``GET /customers/{id}/record``: each caller gets the fields it may see (minimised)."""

    customer_id: str
    name: Annotated[str, Category("identity.name")]
    date_of_birth: Annotated[str, Category("identity.date_of_birth")]
    contact: ContactDetails
    payment_card: Annotated[str | None, Category("financial.payment_card", mask=None)]
    interests: Annotated[list[str], Category("profile.interests")]
    communication_preferences: Annotated[
        list[str], Category("marketing.communication_preferences")]
    pages_visited: Annotated[list[str], Category("usage.website")]
    device: Annotated[str, Category("technical.device")]


def _routes(app: FastAPI, data: dict[str, dict[str, Any]]) -> None:
    def record(customer_id: str) -> dict[str, Any]:
        found = data.get(customer_id)
        if found is None:
            raise HTTPException(404, "no such customer")
        return found

    @app.get("/healthz")
    @public()
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/customers/stats")
    @guarded(categories=["aggregated"])
    async def stats() -> dict[str, Any]:
        devices: dict[str, int] = {}
        for rec in data.values():
            device = rec["technical"]["device"]
            devices[device] = devices.get(device, 0) + 1
        return {"customers": len(data), "devices": devices}

    @app.post("/customers", status_code=201)
    @guarded(categories=["identity", "contact"], action="write")
    async def register(body: dict[str, Any]) -> dict[str, str]:
        cid = f"c-{len(data) + 1:04d}"
        data[cid] = {**customers(1)["c-0001"], "identity": {"name": str(body.get("name"))}}
        return {"customer_id": cid}

    @app.get("/customers/{customer_id}")
    @guarded(categories=["identity", "contact"], subject=SUBJECT)
    async def summary(customer_id: str) -> dict[str, Any]:
        rec = record(customer_id)
        return {"customer_id": customer_id, "identity": rec["identity"],
                "contact": rec["contact"]}

    @app.get("/customers/{customer_id}/record", response_model=CustomerRecord)
    @guarded(subject=SUBJECT, mode="minimise")  # categories: from CustomerRecord's fields
    async def full_record(customer_id: str) -> dict[str, Any]:
        rec = record(customer_id)
        return {"customer_id": customer_id, "name": rec["identity"]["name"],
                "date_of_birth": rec["identity"]["date_of_birth"],
                "contact": {**rec["contact"],
                            "billing_address": rec["contact"]["delivery_address"]},
                "payment_card": rec["financial"]["payment_card"],
                "interests": rec["profile"]["interests"],
                "communication_preferences": rec["marketing"]["communication_preferences"],
                "pages_visited": ["/garden", "/bikes"][:1 + len(customer_id) % 2],
                "device": rec["technical"]["device"]}

    @app.get("/customers/{customer_id}/contact")
    @guarded(categories=["contact"], subject=SUBJECT)
    async def contact(customer_id: str) -> dict[str, Any]:
        return dict(record(customer_id)["contact"])

    @app.put("/customers/{customer_id}/contact")
    @guarded(categories=["contact"], action="write", subject=SUBJECT)
    async def update_contact(customer_id: str, body: ContactUpdate) -> dict[str, Any]:
        rec = record(customer_id)
        rec["contact"].update(body.model_dump(exclude_none=True))
        return dict(rec["contact"])

    @app.get("/customers/{customer_id}/payment")
    @guarded(categories=["financial"], subject=SUBJECT)
    async def payment(customer_id: str) -> dict[str, Any]:
        return dict(record(customer_id)["financial"])

    @app.get("/customers/{customer_id}/profile")
    @guarded(categories=["profile", "marketing"], subject=SUBJECT)
    async def profile(customer_id: str) -> dict[str, Any]:
        rec = record(customer_id)
        return {"profile": rec["profile"], "marketing": rec["marketing"]}

    @app.get("/customers/{customer_id}/devices")
    @guarded(categories=["technical"], subject=SUBJECT)
    async def devices(customer_id: str) -> dict[str, Any]:
        return dict(record(customer_id)["technical"])

    @app.get("/customers/{customer_id}/health")
    @guarded(categories=["special.health"], subject=SUBJECT)
    async def health(customer_id: str) -> dict[str, Any]:
        # Special category data is never collected (notice §2); the guard refuses
        # this route whatever the rules say, so this body never runs.
        raise HTTPException(404, "not collected")

    @app.get("/customers/{customer_id}/loyalty")
    @guarded(categories=["loyalty"], subject=SUBJECT)
    async def loyalty(customer_id: str) -> dict[str, Any]:
        # "loyalty" is not a category of the policy: refused until the policy adds it.
        return {"points": 0}

    @app.get("/internal/debug")
    async def debug(request: Request) -> dict[str, Any]:
        # Not declared: the guard refuses it (route_not_declared).
        return {"customers": len(data)}


def create_app(
    settings: Settings | None = None,
    *,
    guard: Any = None,
    enforce: bool = True,
    authenticator: Authenticator | None = None,
    gc_freeze: bool | None = None,
) -> FastAPI:
    """The example service.

    Args:
        settings: Settings (policy, audit store, identity); read from guard.toml
            and the environment when None.
        guard: A ready ``guard.Guard``; built from ``settings`` (and closed at
            shutdown) when None.
        enforce: False serves the same app without the guard (benchmark baseline).
        authenticator: Who is calling; built from ``settings.identity`` when None.
        gc_freeze: The middleware's: freeze the start-up heap once the app has started
            (None: ``sidecar.gc_freeze``, on by default; False leaves the collector alone).
    """
    settings = settings if settings is not None else load_settings()
    owned = None
    auth: Authenticator | None = None
    if enforce:
        # The development key is trusted only in development mode, never because
        # its file happens to exist.
        auth = authenticator or Authenticator.from_settings(settings.identity)
        if guard is None:
            from guard._guard import Guard

            guard = owned = Guard.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if owned is not None:
                owned.close()

    app = FastAPI(title="customers (purpose-guard example)", lifespan=lifespan)
    _routes(app, customers())

    @app.get("/readyz")
    @public()
    def readyz(request: Request) -> JSONResponse:  # a plain def: the store check runs off
        audit_ok, detail = guard.ready() if guard is not None else (True, "not enforced")
        body = {"status": "ready" if audit_ok else "not_ready",  # ... the event loop
                "audit": {"ok": audit_ok, "detail": detail},
                "development_mode": auth.development if auth is not None else False,
                "key_files_error": auth.key_files_error if auth is not None else None}
        full = auth is not None and proves_a_caller(auth, request)
        return JSONResponse(readiness_view(body, full), status_code=200 if audit_ok else 503,
                            headers={"cache-control": "no-store"})

    withheld_optional(app.openapi())  # a field that may be left out is not required
    if enforce:
        # Routes come from the @guarded declarations above (routes.csv is for the sidecar).
        # Once the start-up is complete, the middleware freezes the start-up heap out of
        # the cyclic collector (docs/middleware.md, "The cyclic collector").
        app.add_middleware(GuardMiddleware, guard=guard, settings=settings,
                           routes=RouteTable(()), authenticator=auth, gc_freeze=gc_freeze)
    return app


@dataclass(frozen=True, slots=True)
class Demo:
    """One ready-to-paste request and the answer the shipped policy gives it."""

    title: str
    method: str
    path: str
    caller: str | None
    purpose: str | None
    reason: str
    token_purposes: tuple[str, ...] | None = None
    body: str | None = None

    @property
    def status(self) -> int:
        """The HTTP status the request gets."""
        if self.reason in ("allowed", "public"):
            return 201 if self.method == "POST" else 200
        return 401 if self.reason == "unauthenticated" else 403


DEMOS: tuple[Demo, ...] = (
    Demo("allowed: CRM reads a customer for relationship management", "GET",
         "/customers/c-0001", "svc:crm", "relationship.management", "allowed"),
    Demo("minimised: CRM gets identity, contact, profile and marketing fields; no card, "
         "pages or device", "GET", "/customers/c-0001/record", "svc:crm", "relationship.management",
         "allowed"),
    Demo("minimised: marketing also gets the pages visited (usage); no card or device",
         "GET", "/customers/c-0001/record", "svc:marketing", "marketing.advertising", "allowed"),
    Demo("minimised: the payment processor gets name, billing address and card only", "GET",
         "/customers/c-0001/record", "proc:payments", "order.processing.payments", "allowed"),
    Demo("allowed: CRM updates contact details (write)", "PUT", "/customers/c-0001/contact",
         "svc:crm", "relationship.management", "allowed", body='{"phone": "+44 20 7946 0000"}'),
    Demo("allowed: analytics reads aggregated stats", "GET", "/customers/stats",
         "svc:analytics", "analytics.improvement", "allowed"),
    Demo("public: health check (no token, counted, no decision)", "GET", "/healthz",
         None, None, "public"),
    Demo("unauthenticated: no token", "GET", "/customers/c-0001", None,
         "relationship.management", "unauthenticated"),
    Demo("unknown_caller: a validly signed caller the policy does not know", "GET",
         "/customers/c-0001", "svc:unknown", "relationship.management", "unknown_caller"),
    Demo("unknown_purpose: a purpose the policy does not know", "GET", "/customers/c-0001",
         "svc:crm", "world.domination", "unknown_purpose"),
    Demo("malformed_request: a purpose header that is not a purpose key", "GET",
         "/customers/c-0001", "svc:crm", "Relationship Management!", "malformed_request"),
    Demo("unknown_category: a route declaring a category the policy lacks", "GET",
         "/customers/c-0001/loyalty", "svc:crm", "relationship.management",
         "unknown_category"),
    Demo("special_category: special category data is never processed", "GET",
         "/customers/c-0001/health", "svc:support", "rights.request", "special_category"),
    Demo("purpose_not_granted: analytics declares relationship management", "GET",
         "/customers/c-0001", "svc:analytics", "relationship.management",
         "purpose_not_granted"),
    Demo("purpose_not_granted: outside the token's purposes claim", "GET",
         "/customers/c-0001/profile", "svc:crm", "promotion.prize_draw",
         "purpose_not_granted", token_purposes=("relationship.management",)),
    Demo("category_not_in_purpose: payment data for relationship management", "GET",
         "/customers/c-0001/payment", "svc:crm", "relationship.management",
         "category_not_in_purpose"),
    Demo("category_not_granted: auth may read usernames, not contact details", "GET",
         "/customers/c-0001", "svc:auth", "business.administration", "category_not_granted"),
    Demo("transfer_not_safeguarded: US group company without a transfer mechanism", "GET",
         "/customers/c-0001/devices", "grp:exalens-us", "business.administration",
         "transfer_not_safeguarded"),
    Demo("consent_required: third-party marketing needs recorded consent", "GET",
         "/customers/c-0001/contact", "svc:marketing", "marketing.third_party",
         "consent_required"),
    Demo("route_not_declared: an endpoint with no category declaration", "GET",
         "/internal/debug", "svc:crm", "relationship.management", "route_not_declared"),
)


def token_variable(demo: Demo) -> str:
    """The shell variable the printed requests use for this demo's token."""
    name = "TOKEN_" + re.sub(r"[^A-Z0-9]+", "_", (demo.caller or "").upper())
    return name + "_LIMITED" if demo.token_purposes else name


def mint_tokens(settings: Settings, ttl_seconds: int = 12 * 3600) -> dict[Demo, str]:
    """A development token for every demo that has a caller (one per caller and claim)."""
    from guard.cli._token import issue_token

    by_variable: dict[str, str] = {}
    out: dict[Demo, str] = {}
    for demo in DEMOS:
        if demo.caller is None:
            continue
        name = token_variable(demo)
        if name not in by_variable:
            purposes = list(demo.token_purposes) if demo.token_purposes else None
            by_variable[name] = issue_token(settings.identity, demo.caller, purposes, ttl_seconds)
        out[demo] = by_variable[name]
    return out


def curl(demo: Demo, base: str) -> str:
    """The ``curl`` command line for a demo; the token comes from its shell variable."""
    parts = [shlex.join(["curl", "-si", "-X", demo.method, f"{base}{demo.path}"])]
    if demo.caller is not None:
        parts.append(f'-H "Authorization: Bearer ${token_variable(demo)}"')
    if demo.purpose:
        parts.append(shlex.join(["-H", f"X-Purpose: {demo.purpose}"]))
    if demo.body:
        parts.append(shlex.join(["-H", "Content-Type: application/json", "-d", demo.body]))
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """Print the demo requests, then serve the guarded example on loopback."""
    parser = argparse.ArgumentParser(prog="python -m examples.customers",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--print-only", action="store_true",
                        help="print the requests and exit without serving")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="leave the cyclic collector alone (the guard freezes the "
                             "start-up heap by default)")
    args = parser.parse_args(argv)
    try:
        _serve(args)
    except GuardError as exc:  # a bad setting: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except BrokenPipeError:  # e.g. `--print-only | head`: one line, as the guard command says it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("error: output closed before everything was written (broken pipe)",
              file=sys.stderr)
        raise SystemExit(2) from None


def _serve(args: argparse.Namespace) -> None:
    settings = load_settings()
    auth = Authenticator.from_settings(settings.identity)  # a bad identity setting stops here
    base = f"http://{args.host}:{args.port}"
    print(f"purpose-guard example: customers service on {base}")
    print(f"policy: {resolve_policy_dir(settings.policy.dir)}; "
          f"audit store: {settings.audit.store}")
    if auth.development:
        tokens = mint_tokens(settings)
        print(f"DEVELOPMENT MODE: tokens signed with {settings.identity.dev_key} are accepted; "
              "configure identity.jwks_file or hs256_secret_file for production\n")
        print("# development tokens (valid 12 hours); paste these first:")
        for name, token in {token_variable(d): t for d, t in tokens.items()}.items():
            print(f"export {name}={token}")
    else:
        print("identity provider configured: development tokens are refused\n")
        print("# export these from your identity provider first:")
        for name in dict.fromkeys(token_variable(d) for d in DEMOS if d.caller):
            print(f"# export {name}=...")
    print()
    for demo in DEMOS:
        print(f"# {demo.title}  -> {demo.status}")
        print(curl(demo, base) + "\n")
    cli = "guard" if shutil.which("guard") else str(Path(sys.executable).with_name("guard"))
    print("# every decision above, newest first (and only the denials, as JSON lines):")
    print(f"{cli} audit query --since 1h --limit 50")
    print(f"{cli} audit query --since 1h --denied --json\n")
    print("# every access to customer c-0001 (searched by pseudonym):")
    print(f"{cli} audit query --subject c-0001\n")
    sys.stdout.flush()  # a closed pipe shows here, not at exit
    if args.print_only:
        return
    import uvicorn

    # The guard never needs the client address; never let X-Forwarded-For rewrite it.
    app = create_app(settings, authenticator=auth, gc_freeze=False if args.no_gc_freeze else None)
    uvicorn.run(app, host=args.host, port=args.port,
                log_level="info", proxy_headers=False)


if __name__ == "__main__":
    main()
