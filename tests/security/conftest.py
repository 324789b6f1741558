"""Adversarial tests: every attack a review found, kept so the next review starts here.

The helpers of the middleware and sidecar tests (``tokenkit``, ``sidecarkit``)
are importable from here as they are there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent.parent
for _kit in (_TESTS / "middleware", _TESTS / "middleware" / "sidecar"):
    if str(_kit) not in sys.path:
        sys.path.insert(0, str(_kit))

from tokenkit import keys  # noqa: E402

__all__ = ["anyio_backend", "keys"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """Async tests run on asyncio (the loop uvicorn uses)."""
    return "asyncio"
