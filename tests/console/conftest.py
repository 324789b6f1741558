"""Fixtures of the console tests: a store filled by the example service, a console, a browser."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from consolekit import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Collect,
    UvicornThread,
    World,
    console_settings,
    example_service,
    fill,
    need_chromium,
)

from middleware.console import create_console

_LOGGERS = ("", "uvicorn", "uvicorn.access", "uvicorn.error", "guard", "guard.console")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Example traffic in a real SQLite store, then a console on real uvicorn."""
    base = tmp_path_factory.mktemp("console")
    settings = console_settings(base, secure_cookies=True)  # Chromium keeps them on 127.0.0.1
    collect = Collect()
    with contextlib.ExitStack() as stack:
        example = stack.enter_context(example_service(settings))
        fill(example, settings)
        server = stack.enter_context(UvicornThread(create_console(settings)))
        # From here on every log line is kept (the console's access log included).
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(collect)
            if name:
                logger.setLevel(logging.DEBUG)
        stack.callback(lambda: [logging.getLogger(n).removeHandler(collect) for n in _LOGGERS])
        yield World(base, settings, example, server.url, collect)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
