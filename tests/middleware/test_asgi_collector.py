"""The cyclic collector: the middleware's freeze is its only change; ``tune_collector`` and
``freeze_once`` (the freeze itself: ``test_asgi_freeze.py``)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tokenkit import Keys, guard_settings

from guard._guard import Guard
from middleware import GuardMiddleware, RouteTable, guarded
from middleware.collector import freeze_once, tune_collector


@pytest.fixture
def collector() -> Iterator[None]:
    """Restore the collector's thresholds and unfreeze after the test."""
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_middleware_told_not_to_freeze_does_not_change_the_collector(
    keys: Keys, tmp_path: Path, collector: None
) -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()

    @guarded(categories=["contact"], action="read", subject="customer_id")
    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    settings = guard_settings(tmp_path, keys)
    app = Starlette(routes=[Route("/customers/{customer_id}", read)])
    with Guard.from_settings(settings) as guard:
        app.add_middleware(GuardMiddleware, guard=guard, settings=settings,
                           routes=RouteTable(()), gc_freeze=False)

        async def get() -> httpx.Response:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://guarded") as client:
                return await client.get("/customers/c-0001", headers={
                    "authorization": f"Bearer {keys.mint('rsa', sub='svc:crm')}",
                    "x-purpose": "relationship.management"})

        response = asyncio.run(get())
    assert response.status_code == 200
    assert (gc.get_threshold(), gc.get_freeze_count()) == (thresholds, 0)


def test_freeze_once_freezes_an_unfrozen_heap_only(collector: None) -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    frozen = freeze_once()
    assert frozen is not None
    # Frozen objects may still die by reference count (a finished thread's frame,
    # another test's server thread winding down), so the count can only fall.
    assert 0 < gc.get_freeze_count() <= frozen
    made = [_Node([]) for _ in range(100)]  # tracked, made after the freeze
    assert freeze_once() is None  # frozen already: left as it is
    # A second freeze would have added the 100 above.
    assert gc.get_freeze_count() <= frozen
    walked = {id(o) for o in gc.get_objects()}  # every generation but the frozen one
    assert all(id(node) in walked for node in made)
    assert gc.get_threshold() == thresholds
    assert len(made) == 100


def test_tune_collector_freezes_and_leaves_the_threshold_by_default(collector: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    assert tune_collector() == before
    assert gc.get_threshold() == before  # nothing made after start-up lives longer
    assert gc.get_freeze_count() > 0


def test_tune_collector_collects_before_it_freezes(collector: None) -> None:
    gc.unfreeze()
    gc.collect()
    gc.disable()  # the cycle below stays until a collection finds it
    try:
        cycle: list[object] = []
        cycle.append(cycle)
        gone = weakref.ref(_Node(cycle))
        del cycle
        tune_collector()
    finally:
        gc.enable()
    assert gone() is None  # start-up garbage is collected, not frozen for good


def test_tune_collector_can_raise_the_threshold(collector: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tune_collector(threshold=20_000)
    assert gc.get_threshold() == (20_000, before[1], before[2])
    assert gc.get_freeze_count() > 0


class _Node:
    """A weak-referenceable object in a reference cycle."""

    def __init__(self, cycle: list[object]) -> None:
        self.cycle = cycle
        cycle.append(self)


def test_tune_collector_can_leave_the_heap_unfrozen(collector: None) -> None:
    gc.unfreeze()
    tune_collector(threshold=5_000, freeze=False)
    assert gc.get_threshold()[0] == 5_000
    assert gc.get_freeze_count() == 0


def test_tune_collector_refuses_to_switch_the_collector_off(collector: None) -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="at least 1"):
        tune_collector(threshold=0)
    assert gc.get_threshold() == before
