"""Helpers of the operations tests: a `guard sidecar` process, a private PostgreSQL, chattr."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sidecarkit import policy_copy, poll, wait_for_port

from bench._pg import _as_postgres, _bindir, free_port

POLICIES = Path(__file__).resolve().parents[2] / "policies"
GUARD = Path(sys.executable).with_name("guard")
ASK = {"purpose": "relationship.management", "categories": ["contact.email"]}
"""svc:crm asking this is allowed by the shipped policy."""


class SidecarProcess:
    """``guard sidecar`` as an operator runs it: its own process, its log in a file.

    Args:
        tmp: A folder of its own (audit keys, log, config).
        env: ``GUARD_*`` settings on top of the defaults set here.
        token: Bearer token for ``/v1/decide``.
    """

    def __init__(self, tmp: Path, env: dict[str, str], token: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        policy = policy_copy(tmp / "policy", POLICIES)
        (tmp / "guard.toml").write_text("")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / "sidecar.log"
        self.token = token
        base = {
            "GUARD_CONFIG": str(tmp / "guard.toml"),
            "GUARD_POLICY__DIR": str(policy),
            "GUARD_POLICY__WATCH": "false",
            "GUARD_AUDIT__STORE": f"sqlite:///{tmp / 'audit.db'}",
            "GUARD_AUDIT__HMAC_KEY": str(tmp / "keys" / "hmac.key"),
            "GUARD_AUDIT__SIGNING_KEY": str(tmp / "keys" / "signing.key"),
            "GUARD_IDENTITY__DEV_KEY": str(tmp / "keys" / "dev.key"),
            "GUARD_SIDECAR__ROUTES": str(policy / "routes.csv"),
            "GUARD_SIDECAR__LOG_LEVEL": "info",
        }
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
        self.proc = subprocess.Popen(
            [str(GUARD), "sidecar", "--port", str(self.port)],
            cwd=tmp,
            env={**clean, **base, **env},
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        wait_for_port(self.port, proc=self.proc, log=self.log, timeout=30)

    def get(self, path: str, timeout: float = 30) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def decide(self) -> dict[str, Any]:
        """Ask for an allowed decision; the decision as answered."""
        resp = httpx.post(self.url + "/v1/decide", json=ASK, timeout=30,
                          headers={"authorization": f"Bearer {self.token}"})
        assert resp.status_code == 200, resp.text
        decision: dict[str, Any] = resp.json()["decision"]
        return decision

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, ready: bool, timeout: float = 20) -> dict[str, Any]:
        """Poll ``/readyz`` until it answers 200 (``ready``) or 503; its body."""
        want = 200 if ready else 503

        def check() -> dict[str, Any] | None:
            resp = self.get("/readyz")
            body: dict[str, Any] = resp.json()
            return body if resp.status_code == want else None

        found: dict[str, Any] = poll(check, timeout=timeout, step=0.1)
        return found

    def stop(self, wait: float = 20) -> None:
        """SIGTERM, then SIGKILL if it has not stopped within ``wait`` seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def chattr_unsupported(folder: Path) -> str | None:
    """Why ``chattr +i`` cannot be used on ``folder``'s filesystem, or None if it can."""
    if shutil.which("chattr") is None:
        return "chattr is not installed (e2fsprogs)"
    if os.geteuid() != 0:
        return "chattr +i needs root (CAP_LINUX_IMMUTABLE)"
    probe = folder / ".chattr-probe"
    probe.write_text("")
    try:
        done = subprocess.run(["chattr", "+i", str(probe)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            return f"the filesystem of {folder} does not support chattr +i: {done.stderr.strip()}"
        subprocess.run(["chattr", "-i", str(probe)], check=True)
        return None
    finally:
        probe.unlink(missing_ok=True)


class PrivatePostgres:
    """A PostgreSQL server of one test's own, which the test may pause and stop.

    Never the shared server of ``tests/conftest.py``: pausing that would stall others.
    """

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.base = Path(tempfile.mkdtemp(prefix="guard-ops-pg-"))
        self.data = self.base / "data"
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.data, "postgres")
        subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(self.data), "-U",
                                     "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]),
                       check=True, capture_output=True)
        port = free_port()
        self.server = subprocess.Popen(
            _as_postgres([str(bindir / "postgres"), "-D", str(self.data), "-p", str(port),
                          "-h", "127.0.0.1", "-k", str(self.base)]),
            stdout=subprocess.DEVNULL, stderr=(self.base / "server.log").open("wb"),
        )
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if self.server.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    pytest.fail("the private PostgreSQL did not start")
                time.sleep(0.1)
        self._paused: list[int] = []

    def _pids(self) -> list[int]:
        """The postmaster and every process it started."""
        master = int((self.data / "postmaster.pid").read_text().split()[0])
        pids = [master]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == master:
                    pids.append(int(stat.parent.name))
        return pids

    def pause(self) -> None:
        """SIGSTOP the server: connections hang, as with a database that stopped answering.

        The postmaster first (it starts no backend once stopped), then every process it
        started; a backend whose client has just left may exit meanwhile: it needs no stop.
        """
        master = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(master, signal.SIGSTOP)
        self._paused = self._pids()
        for pid in self._paused:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT what :meth:`pause` stopped."""
        # runuser, when it started the server, stops itself when its child stops.
        for pid in [*self._paused, self.server.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._paused = []

    def stop(self) -> None:
        """Stop the server for good (connections are refused from now on)."""
        self.resume()
        if self.server.poll() is None:
            with contextlib.suppress(OSError, ValueError):  # fast shutdown: sessions end now
                master = int((self.data / "postmaster.pid").read_text().split()[0])
                os.kill(master, signal.SIGINT)
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.server.terminate()
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A :class:`PrivatePostgres`, stopped and removed afterwards."""
    server = PrivatePostgres()
    try:
        yield server
    finally:
        server.close()


def free_bytes(path: Path) -> int:
    """Bytes free for an unprivileged writer on ``path``'s filesystem."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill_disk(disk: Path, leave: int) -> Path:
    """A filler file on ``disk`` that leaves ``leave`` bytes free."""
    filler = disk / "filler"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free_bytes(disk) - leave))
    return filler


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file
