"""``GuardMiddleware`` freezes the start-up heap once, when the app's start-up is complete.

Under real uvicorn in a process of its own (the freeze is process-wide): the
server's ``gc.get_freeze_count()`` after start-up, the app's own start-up objects
frozen, the opt-outs (the argument, ``sidecar.gc_freeze``), ``--lifespan off``
(frozen at the first request). In process: once for several apps, and a failed
start-up freezes nothing.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import Message
from tokenkit import Keys, guard_settings

from middleware import GuardMiddleware, RouteTable

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """This process's heap unfrozen before and after (the freeze is process-wide)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _served(tmp: Path, *options: str, **env: str) -> Iterator[str]:
    """``uvicorn --factory freezeapp:create`` on loopback until the ``with`` ends; its URL."""
    port = _free_port()
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("GUARD_", "FREEZEAPP_"))}
    environ.update({
        "GUARD_CONFIG": os.devnull,
        "GUARD_POLICY__DIR": str(REPO / "policies"),
        "GUARD_POLICY__WATCH": "false",
        "GUARD_AUDIT__STORE": f"sqlite:///{tmp / 'audit.db'}",
        "GUARD_AUDIT__HMAC_KEY": str(tmp / "keys" / "hmac.key"),
        "GUARD_AUDIT__SIGNING_KEY": str(tmp / "keys" / "signing.key"),
        "GUARD_IDENTITY__DEV_KEY": str(tmp / "keys" / "dev.key"),
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]),
        **env,
    })
    log = tmp / "uvicorn.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "freezeapp:create",
             "--host", "127.0.0.1", "--port", str(port), *options],
            cwd=tmp, env=environ, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:  # listening: uvicorn listens once its start-up is over
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log.read_text(errors="replace")) from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _report(url: str) -> dict[str, Any]:
    response = httpx.get(url + "/gc", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_start_up_heap_is_frozen_the_apps_own_included(tmp_path: Path) -> None:
    with _served(tmp_path, "--lifespan", "on") as url:
        report = _report(url)
    assert report["frozen"] > 10_000  # modules, policy, app: not a handful
    assert report["built_frozen"] == [True]  # what the app's lifespan start-up built


@pytest.mark.parametrize("opt_out", [{"FREEZEAPP_GC_FREEZE": "false"},
                                     {"GUARD_SIDECAR__GC_FREEZE": "false"}],
                         ids=["argument", "setting"])
def test_an_opt_out_leaves_the_collector_alone(tmp_path: Path, opt_out: dict[str, str]) -> None:
    with _served(tmp_path, "--lifespan", "on", **opt_out) as url:
        report = _report(url)
    assert report == {"frozen": 0, "built_frozen": [False]}


def test_the_argument_overrides_the_setting(tmp_path: Path) -> None:
    with _served(tmp_path, "--lifespan", "on", FREEZEAPP_GC_FREEZE="true",
                 GUARD_SIDECAR__GC_FREEZE="false") as url:
        assert _report(url)["frozen"] > 10_000


def test_with_lifespan_off_the_heap_is_frozen_before_the_first_request(tmp_path: Path) -> None:
    with _served(tmp_path, "--lifespan", "off") as url:
        first, second = _report(url), _report(url)
    assert first["frozen"] > 10_000  # the first request was judged after the freeze
    # once: not again at the second request (the first one's own frozen objects, its
    # scope and the like, were freed by their reference counts when it ended)
    assert second["frozen"] <= first["frozen"]
    assert first["built_frozen"] == []  # no lifespan: the app built nothing


# -- in process: the lifespan as a server drives it ------------------------------------------


async def _start_up(app: Starlette, *, fails: bool = False) -> list[tuple[str, int]]:
    """Drive ``app``'s lifespan start-up; each message it sends, with the freeze count then."""
    sent: list[tuple[str, int]] = []
    started = asyncio.Event()
    messages: list[Message] = [{"type": "lifespan.startup"}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await started.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        sent.append((message["type"], gc.get_freeze_count()))
        started.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    if fails:
        with pytest.raises(RuntimeError, match="start-up failed"):
            await app(scope, receive, send)
    else:
        await app(scope, receive, send)
    return sent


def _app(tmp: Path, keys: Keys, *, fails: bool = False) -> Starlette:
    """A guarded app whose lifespan start-up succeeds or fails."""
    tmp.mkdir(exist_ok=True)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if fails:
            raise RuntimeError("the app's start-up failed")
        yield

    async def ok(_: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/healthz", ok)], lifespan=lifespan)
    app.add_middleware(GuardMiddleware, settings=guard_settings(tmp, keys),
                       routes=RouteTable(()))
    return app


def test_the_heap_is_frozen_before_the_server_hears_the_start_up_is_complete(
    tmp_path: Path, keys: Keys, unfrozen: None
) -> None:
    sent = asyncio.run(_start_up(_app(tmp_path, keys)))
    assert sent[0][0] == "lifespan.startup.complete"
    assert sent[0][1] > 10_000


def test_a_failed_start_up_freezes_nothing(tmp_path: Path, keys: Keys, unfrozen: None) -> None:
    sent = asyncio.run(_start_up(_app(tmp_path, keys, fails=True), fails=True))
    assert [kind for kind, _ in sent] == ["lifespan.startup.failed"]
    assert gc.get_freeze_count() == 0


def test_several_guarded_apps_freeze_once(tmp_path: Path, keys: Keys, unfrozen: None) -> None:
    first = asyncio.run(_start_up(_app(tmp_path / "a", keys)))[0][1]
    second = asyncio.run(_start_up(_app(tmp_path / "b", keys)))  # built after the freeze
    assert first > 10_000
    # nothing more frozen: a second freeze would add the second app, its guard and all
    # they hold (the count may fall: frozen objects are still freed by reference counts)
    assert second[0][0] == "lifespan.startup.complete"
    assert second[0][1] <= first
