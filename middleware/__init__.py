"""Enforcement points: the ASGI middleware and the sidecar."""

from __future__ import annotations

__all__: list[str] = []
