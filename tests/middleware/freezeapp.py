"""A guarded app for the start-up freeze tests, served by uvicorn in a process of its own.

``uvicorn --factory freezeapp:create``; the guard's settings come from ``GUARD_*``.
``FREEZEAPP_GC_FREEZE`` is the middleware's ``gc_freeze`` argument (``true``,
``false``; unset: None, the setting decides). ``GET /gc`` (public) answers the
process's ``gc.get_freeze_count()`` and whether the object the app's own lifespan
start-up built is frozen (the collector no longer lists it).
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from middleware import GuardMiddleware, RouteTable


class Built:
    """What the app's own start-up makes (an object the collector tracks)."""


def create() -> Starlette:
    """The app: ``/gc`` behind ``GuardMiddleware``, a lifespan that builds one object."""
    built: list[Built] = []

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        built.append(Built())
        yield

    async def report(request: Request) -> JSONResponse:
        listed = {id(o) for o in gc.get_objects()}  # frozen objects are not listed
        return JSONResponse({"frozen": gc.get_freeze_count(),
                             "built_frozen": [id(b) not in listed for b in built]})

    app = Starlette(routes=[Route("/gc", report)], lifespan=lifespan)
    option = os.environ.get("FREEZEAPP_GC_FREEZE")
    app.add_middleware(GuardMiddleware, routes=RouteTable(()), public_paths=("/gc",),
                       gc_freeze=None if option is None else option == "true")
    return app
