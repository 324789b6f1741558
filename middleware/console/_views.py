"""The console's pages: decisions, one event, subject access, overview, integrity, policies."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from functools import partial
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from guard._types import HttpContext, Reason
from guard.audit import AuditQueryError, parse_when
from guard.policy._compiled import CompiledPolicy
from guard.policy._diff import PolicyDiff
from middleware.console import _export, _overview, _policies
from middleware.console._data import (
    Filters,
    Row,
    Tail,
    decisions_page,
    event_detail,
)
from middleware.console._pages import render
from middleware.console._state import Console
from middleware.console._subject import (
    GROUPED_BY,
    grant_valid,
    group_decisions,
    lookup,
    subject_view,
)

PARTY_TYPES = ("internal", "group", "processor", "adviser", "authority")
_PSEUDONYM = re.compile(r"^[0-9a-f]{64}$")
_EVENT_ID = re.compile(r"^[0-9a-fA-F-]{36}$")
TAIL_POLL_SECONDS = 1.0
TAIL_MAX_SECONDS = 300.0


def _policy(console: Console) -> CompiledPolicy | None:
    guard = console.guard
    return guard.holder.current if guard is not None else None


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def row_json(row: Row) -> dict[str, Any]:
    """A decision as the table shows it (the live tail sends these)."""
    e = row.event
    return {"event_id": e.event_id, "ts": e.ts, "caller": e.caller,
            "party_type": e.party_type or "", "country": e.country or "",
            "purpose": e.purpose, "categories": ", ".join(e.categories),
            "allowed": bool(e.allowed), "reason": e.reason, "route": e.http_route or "",
            "status": "" if row.status is None else row.status}


# -- decisions -------------------------------------------------------------------------------

async def decisions(request: Request, console: Console, auditor: str) -> Response:
    """The decisions table, filtered, newest first, one keyset page at a time."""
    filters = Filters.from_query(request.query_params)
    cursor = request.query_params.get("cursor") or None
    error = None
    try:
        page = await run_in_threadpool(decisions_page, console.store(), filters, cursor=cursor,
                                       size=console.settings.console.page_size)
        rows, next_cursor = page.rows, page.next_cursor
    except AuditQueryError as exc:
        rows, next_cursor, error = (), None, str(exc)
    query = filters.items()
    next_link = (f"{_base(request)}/decisions?{urlencode([*query, ('cursor', next_cursor)])}"
                 if next_cursor else None)
    return render(request, "decisions.html", {
        "auditor": auditor, "rows": [row_json(r) for r in rows], "filters": filters,
        "reasons": [r.value for r in Reason], "party_types": PARTY_TYPES,
        "next_link": next_link, "error": error, "first_page": cursor is None,
        "tail_query": urlencode(query)})


async def tail(request: Request, console: Console, auditor: str) -> Response:
    """Server-sent events: each new matching decision as a JSON ``decision`` event."""
    filters = Filters.from_query(request.query_params)
    store = console.store()
    try:
        filters.where(store)
    except AuditQueryError as exc:
        return Response(str(exc), status_code=400)
    follow = Tail(store, filters)
    await run_in_threadpool(follow.start)

    async def events() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        loop = asyncio.get_running_loop()
        ends = loop.time() + TAIL_MAX_SECONDS
        while loop.time() < ends and not await request.is_disconnected():
            for row in await run_in_threadpool(follow.poll):
                yield f"event: decision\ndata: {json.dumps(row_json(row))}\n\n"
            yield ": keep-alive\n\n"
            await asyncio.sleep(TAIL_POLL_SECONDS)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})


async def event(request: Request, console: Console, auditor: str) -> Response:
    """One event in full, with its outcome (or its decision)."""
    event_id = request.path_params["event_id"]
    detail = None
    if _EVENT_ID.match(event_id):
        detail = await run_in_threadpool(event_detail, console.store(), event_id)
    if detail is None:
        return render(request, "error.html",
                      {"auditor": auditor, "message": "No event with that id."},
                      status_code=404)
    fields = detail.event.to_dict()
    return render(request, "event.html", {"auditor": auditor, "event": detail.event,
                                          "fields": fields, "related": detail.related})


# -- subject access --------------------------------------------------------------------------

async def subject_form(request: Request, console: Console, auditor: str) -> Response:
    """The subject look-up form (POST: the id never goes in a URL)."""
    return render(request, "subject_form.html", {"auditor": auditor, "error": None,
                                                 "purpose": console.settings.console.purpose})


async def subject_lookup(request: Request, console: Console, auditor: str) -> Response:
    """Decide and record the look-up, then redirect to the pseudonym's report."""
    from middleware.console._app import form, form_too_large

    fields = await form(request)
    if fields is None:
        return form_too_large()
    raw = fields.get("subject", "").strip()
    conf = console.settings.console
    if not raw:
        return render(request, "subject_form.html",
                      {"auditor": auditor, "error": "Enter a subject id.",
                       "purpose": conf.purpose}, status_code=400)
    found = await lookup(console.live_guard(), console.hmac_key, conf, auditor, raw)
    del raw
    if found.reason == Reason.AUDIT_UNAVAILABLE.value:
        return render(request, "subject_form.html", {
            "auditor": auditor, "purpose": conf.purpose,
            "error": "The audit trail cannot record this look-up right now, so it is "
                     "refused (audit_unavailable)."}, status_code=503)
    if not found.allowed:
        return render(request, "subject_form.html", {
            "auditor": auditor, "purpose": conf.purpose,
            "error": f"The policy refused this look-up ({found.reason}): {auditor} may not "
                     f"access a data subject's records for {conf.purpose}. The refusal "
                     "is recorded in the trail."}, status_code=403)
    return RedirectResponse(
        f"{_base(request)}/subject/{found.pseudonym}?{urlencode({'grant': found.decision_id})}",
        status_code=303)


async def _granted(request: Request, console: Console, auditor: str,
                   route: str) -> tuple[str, str] | Response:
    """The pseudonym and grant of a subject URL, recorded as a view; or a refusal page."""
    pseudonym = request.path_params["pseudonym"]
    grant = request.query_params.get("grant", "")
    ok = bool(_PSEUDONYM.match(pseudonym)) and bool(_EVENT_ID.match(grant)) and (
        await run_in_threadpool(partial(grant_valid, purpose=console.settings.console.purpose),
                                console.store(), grant, auditor, pseudonym,
                                console.settings.console.grant_minutes))
    if not ok:
        return render(request, "error.html", {
            "auditor": auditor,
            "message": "This report link is not (or no longer) valid for you: look the "
                       "subject up again."}, status_code=403)
    recorded = await console.live_guard().arecord_outcome(
        grant, 200, HttpContext(method=request.method, route=route))
    if not recorded:
        return render(request, "error.html", {
            "auditor": auditor,
            "message": "The audit trail cannot record this view right now, so it is refused."},
            status_code=503)
    return pseudonym, grant


async def subject_page(request: Request, console: Console, auditor: str) -> Response:
    """Every access to one subject's data, the §9 summary and export links."""
    granted = await _granted(request, console, auditor, "/subject/{pseudonym}")
    if isinstance(granted, Response):
        return granted
    pseudonym, grant = granted
    view = await run_in_threadpool(subject_view, console.store(), pseudonym, _policy(console))
    size = console.settings.console.page_size
    pages = max(1, -(-len(view.decisions) // size))
    number = _page_number(request.query_params.get("page", ""), pages)
    shown = view.decisions[(number - 1) * size:number * size]
    refused = sum(1 for r in view.decisions if not r.event.allowed)
    return render(request, "subject.html", {
        "auditor": auditor, "view": view, "report": view.report,
        "kinds": group_decisions(view.decisions), "grouped_by": GROUPED_BY,
        "total": len(view.decisions), "refused": refused,
        "rows": [row_json(r) for r in shown],
        "lawful": {r.event.event_id: ", ".join(r.event.lawful_basis) for r in shown},
        "unlisted": view.refused_unlisted,
        "page": number, "pages": pages, "first_shown": (number - 1) * size + 1,
        "grant": urlencode({"grant": grant}), "pseudonym": pseudonym})


def _page_number(text: str, pages: int) -> int:
    """The page asked for (``?page=N``), within 1..``pages``; 1 when absent or not a number."""
    number = int(text) if text.isdigit() and len(text) < 10 else 1
    return min(max(number, 1), pages)


async def subject_export(request: Request, console: Console, auditor: str) -> Response:
    """The reply as ``report.csv``, ``report.json`` or ``report.pdf``."""
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "json", "pdf"):
        return render(request, "error.html", {"auditor": auditor, "message": "No such format."},
                      status_code=404)
    granted = await _granted(request, console, auditor,
                             f"/subject/{{pseudonym}}/report.{fmt}")
    if isinstance(granted, Response):
        return granted
    pseudonym, _ = granted
    view = await run_in_threadpool(subject_view, console.store(), pseudonym, _policy(console))
    name = f"access-report-{pseudonym[:12]}.{fmt}"
    disposition = {"content-disposition": f'attachment; filename="{name}"'}
    if fmt == "csv":
        return Response(_export.to_csv(view), media_type="text/csv; charset=utf-8",
                        headers=disposition)
    if fmt == "json":
        return Response(_export.to_json(view), media_type="application/json",
                        headers=disposition)
    pdf = await run_in_threadpool(_export.to_pdf, view)
    return Response(pdf, media_type="application/pdf", headers=disposition)


# -- overview, integrity, policies -----------------------------------------------------------

def _since(request: Request) -> tuple[str, str]:
    text = request.query_params.get("since", "").strip() or "24h"
    return text, parse_when(text, option="since")


async def overview(request: Request, console: Console, auditor: str) -> Response:
    """The charts page (the charts fetch their data from ``overview/data.json``)."""
    text, _ = _since(request)
    return render(request, "overview.html", {"auditor": auditor, "since": text,
                                             "data_query": urlencode({"since": text})})


async def overview_data(request: Request, console: Console, auditor: str) -> Response:
    """The chart series as JSON."""
    try:
        _, since = _since(request)
    except AuditQueryError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    data = await run_in_threadpool(_overview.overview_data, console.store(), since,
                                   _policy(console))
    return JSONResponse(data)


async def integrity(request: Request, console: Console, auditor: str) -> Response:
    """The last verification of every chain; the first visit starts one."""
    if console.last_check is None:
        console.start_check()
    return render(request, "integrity.html", {"auditor": auditor, "result": console.last_check,
                                              "running": console.checking_since})


async def integrity_check(request: Request, console: Console, auditor: str) -> Response:
    """Start a new verification, then show the page (it refreshes until the result is in)."""
    console.start_check()
    return RedirectResponse(f"{_base(request)}/integrity", status_code=303)


async def policies(request: Request, console: Console, auditor: str) -> Response:
    """Every policy loaded or rejected; the access diff between two chosen versions."""
    events = await run_in_threadpool(_policies.history, console.store())
    old = request.query_params.get("old", "").strip()
    new = request.query_params.get("new", "").strip()
    diff: PolicyDiff | None = None
    missing: list[str] = []
    if old and new:
        diff, missing = await run_in_threadpool(_policies.diff, console.settings,
                                                _policy(console), old, new)
    versions = list(dict.fromkeys(e.version for e in events))
    return render(request, "policies.html", {
        "auditor": auditor, "events": events, "versions": versions, "old": old, "new": new,
        "diff": diff, "missing": missing,
        "by_caller": diff.by_caller() if diff is not None else {},
        "store_keeps_texts": console.settings.policy.source.startswith(
            ("postgresql://", "postgres://"))})
