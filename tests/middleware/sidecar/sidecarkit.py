"""Real servers for the sidecar tests: the sidecar under uvicorn, nginx, policy copies."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Send

from bench._pg import free_port
from guard.audit import wait_indexed
from guard.config import AuditSettings, PolicySettings, Settings, SidecarSettings

NGINX = os.environ.get("GUARD_NGINX", "/usr/sbin/nginx")
REPO = Path(__file__).resolve().parents[3]


# Routes the tests guard; the shipped organisation (POLICY-SPEC §2) decides.
ROUTES_CSV = """\
# method, path template, categories, action, subject parameter
GET,  /customers/{customer_id},  identity contact, read,  customer_id
GET,  /echo/{name},              contact,          read
PUT,  /files/{name},             contact,          write
GET,  /files/{name},             contact,          read
GET,  /public/{rest:path},       public
"""


def wait_for_port(
    port: int,
    *,
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc is not None and proc.poll() is not None:
            text = log.read_text()[-3000:] if log is not None and log.exists() else ""
            pytest.fail(f"server exited with {proc.returncode} before listening: {text}")
        if time.monotonic() > deadline:
            pytest.fail(f"nothing listens on port {port} after {timeout}s")
        time.sleep(0.05)


def policy_copy(dest: Path, source: Path, routes: str = ROUTES_CSV) -> Path:
    """A writable copy of the shipped policy with ``routes`` (the test routes) beside it."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.conf", "rules.csv"):
        shutil.copyfile(source / name, dest / name)
    (dest / "routes.csv").write_text(routes)
    return dest


def sidecar_settings(
    tmp: Path,
    policy_dir: Path,
    identity: Any,
    *,
    upstream: str | None = None,
    watch: bool = False,
    source: str = "files",
    **sidecar: Any,
) -> Settings:
    """Settings for one sidecar with its own audit store and keys under ``tmp``."""
    return Settings(
        policy=PolicySettings(dir=policy_dir, source=source, watch=watch),
        audit=AuditSettings(
            store=f"sqlite:///{tmp / 'audit.db'}",
            hmac_key=tmp / "keys" / "subject-hmac.key",
            signing_key=tmp / "keys" / "audit-signing.key",
        ),
        identity=identity,
        sidecar=SidecarSettings(upstream=upstream, routes=policy_dir / "routes.csv", **sidecar),
    )


class QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without a log line per request."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WsgiThread:
    """A real HTTP upstream: the subclass's :meth:`app` under wsgiref on a free loopback port,
    served by a thread while the context is open (``handler``: wsgiref's request handler)."""

    handler: type[WSGIRequestHandler] = QuietHandler

    def __init__(self) -> None:
        self.port = free_port()
        self.server: WSGIServer = make_server("127.0.0.1", self.port, self.app,
                                              handler_class=self.handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def app(self, environ: dict[str, Any], start: Any) -> Iterable[bytes]:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class ServerThread:
    """An ASGI app served by real uvicorn on loopback, in a thread.

    Args:
        app: The ASGI app.
        port: The loopback port.
        http: uvicorn's HTTP protocol (``"h11"``, or a class such as the sidecar's own).
    """

    def __init__(self, app: Any, port: int, *, http: Any = "auto") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on",
            http=http,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60  # generous: a loaded machine starts slowly
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the sidecar did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class Nginx:
    """nginx from Debian's package, on loopback ports, with a config written by the test."""

    def __init__(self, prefix: Path, servers: str) -> None:
        self.prefix = prefix
        for sub in ("logs", "tmp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {prefix / 'tmp' / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(
            f"{user}worker_processes 1;\n"
            f"error_log {prefix / 'logs' / 'error.log'} warn;\n"
            f"pid {prefix / 'nginx.pid'};\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            "    access_log off;\n"
            "    default_type application/octet-stream;\n"
            f"{temp}\n"
            f"{servers}\n"
            "}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *ports: int) -> Nginx:
        log = self.prefix / "logs" / "stderr.log"
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        for port in ports:
            wait_for_port(port, proc=self.proc, log=log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def need_nginx() -> None:
    """Skip (or fail, when GUARD_REQUIRE_NGINX=1) if nginx is not installed."""
    if Path(NGINX).exists():
        return
    message = f"nginx not found at {NGINX} (apt-get install nginx, or scripts/install-services)"
    if os.environ.get("GUARD_REQUIRE_NGINX") == "1":
        pytest.fail(message)
    pytest.skip(message)


def audit_rows(db: Path, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    """Audit events from the sidecar's SQLite store, oldest first (once it indexes the journal)."""
    wait_indexed(AuditSettings(store=f"sqlite:///{db}"))
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT * FROM audit_event WHERE {where} ORDER BY ts, seq", params
        ).fetchall()
    return [dict(row) for row in rows]


def poll(check: Callable[[], Any], *, timeout: float = 30.0, step: float = 0.02) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(step)


def version_of(url: str) -> str:
    """The policy version a sidecar reports on /healthz."""
    return str(httpx.get(url + "/healthz", timeout=5).json()["policy_version"])


def serve_sidecar(settings: Settings) -> ServerThread:
    """The sidecar app for ``settings`` under real uvicorn on a free loopback port."""
    from middleware.sidecar import create_app

    return ServerThread(create_app(settings), free_port())


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI ``lifespan`` scope as a plain app does: started, then shut down."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})
