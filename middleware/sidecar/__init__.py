"""The stand-alone enforcement point: proxy, check endpoint, decision API, health, reload."""

from __future__ import annotations

from middleware.sidecar._app import ProxyEndpoint, app_from_env, create_app
from middleware.sidecar._decide_api import (
    DecideBatch,
    DecideBatchResult,
    DecideRequest,
    DecideResult,
)
from middleware.sidecar._openapi import openapi_document
from middleware.sidecar._proxy import HOP_BY_HOP, Proxy, UpstreamError
from middleware.sidecar._reload import Reloader, ReloadStatus
from middleware.sidecar._state import Sidecar, build_sidecar

__all__ = [
    "HOP_BY_HOP",
    "DecideBatch",
    "DecideBatchResult",
    "DecideRequest",
    "DecideResult",
    "Proxy",
    "ProxyEndpoint",
    "ReloadStatus",
    "Reloader",
    "Sidecar",
    "UpstreamError",
    "app_from_env",
    "build_sidecar",
    "create_app",
    "openapi_document",
]
