"""Fixtures shared by the middleware tests (helpers live in tokenkit.py)."""

from __future__ import annotations

import pytest
from tokenkit import keys

__all__ = ["anyio_backend", "keys"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio (the loop uvicorn uses)."""
    return "asyncio"
