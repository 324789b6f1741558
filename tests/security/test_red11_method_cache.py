"""A long method is not remembered: a client with no credentials cannot fill the memory.

A route's answer is remembered by (type, method, root_path, path), with the plan of its
route and method, and each method's HTTP context: up to 4,096 answers and as many route
shapes. The method was not bounded there (the judgement cuts it to 32 characters, after):
uvicorn's h11 server takes a method of 15,000 characters, so anyone could make a guarded
service keep some 4,096 x 3 of them (about 180 MB) with requests that are all refused. A
method longer than ``MAX_METHOD`` (32) characters is now judged without being remembered.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import BaseModel
from tokenkit import UvicornThread, guard_settings

from middleware import Category, GuardMiddleware, guarded
from middleware._enforce import _contexts

METHODS = 40
LONG = 15_000


class Named(BaseModel):
    name: Annotated[str, Category("identity.name")]


def _status(port: int, method: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(method + b" /records/c-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head = b""
        while b"\r\n" not in head and (chunk := conn.recv(4096)):
            head += chunk
    return head.split(b"\r\n", 1)[0]


def guarded_record(tmp_path: Path, keys: Any) -> GuardMiddleware:
    """A guarded FastAPI app with one ``deny`` route, ``/records/{customer_id}``, answering
    a name."""
    api = FastAPI()

    @api.get("/records/{customer_id}", response_model=Named)
    @guarded(subject="customer_id")
    async def record(customer_id: str) -> Any:
        return {"name": "Ann"}

    return GuardMiddleware(api, settings=guard_settings(tmp_path, keys))


def test_long_methods_are_refused_and_not_kept(tmp_path: Path, keys: Any) -> None:
    guard = guarded_record(tmp_path, keys)
    with UvicornThread(guard, http="h11", log_level="critical") as served:
        for i in range(METHODS):  # each a new method, as long as h11 takes
            method = b"X" * (LONG - 4) + b"%04d" % i
            assert _status(served.port, method).startswith(b"HTTP/1.1 403"), i
    routes = guard._app_routes
    assert routes is not None
    kept = (sum(len(str(key[1])) for key in routes._answers)
            + sum(len(key[1]) for key in routes._shapes)
            + sum(len(key[0]) for key in _contexts))
    # Before: every method kept three times (40 x 15,000 x 3).
    assert kept < METHODS * 1024, f"{kept} characters of methods kept"
