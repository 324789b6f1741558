"""Helpers of the audit tampering tests: a recorded chain, raw SQL as an attacker, verify.

The attacker has write access to the store (any SQL) and knows the hash format,
but holds neither the checkpoint signing key nor the chain key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench._pg import _as_postgres, _bindir, free_port
from guard.audit import (
    AuditEvent,
    EventKind,
    JournalTrail,
    VerifyReport,
    derive_chain_key,
    load_public_key,
    load_signing_key,
    new_event_id,
    open_store,
    pseudonymise,
    read_witness,
    verify,
)
from guard.audit._event import GENESIS_HASH, utc_now
from guard.audit._fields import ChainKey, row_event
from guard.audit._schema import EVENT_COLUMNS
from guard.config import AuditSettings
from tests.guard.audit.conftest import IndexedTrail, linked, sql
from tests.guard.audit.conftest import record as record_event

HMAC_KEY = b"h" * 32
CHAIN_KEY = derive_chain_key(HMAC_KEY)
GUARD = [sys.executable, "-c", "from guard.cli import main; main()"]


@dataclass(frozen=True)
class AuditKeys:
    """Key files of one test: the signing key, its public half, the subject HMAC key."""

    signing: Path
    public: Path
    hmac: Path


def make_keys(base: Path) -> AuditKeys:
    """Create the key files under ``base``."""
    signing = base / "keys" / "audit-signing.key"
    load_signing_key(signing, create=True)
    hmac_file = base / "keys" / "subject-hmac.key"
    hmac_file.write_text(HMAC_KEY.hex() + "\n")
    return AuditKeys(signing, signing.with_name(signing.name + ".pub"), hmac_file)


def trail(url: str, keys: AuditKeys, *, timeout: float = 5.0, indexed: bool = True,
          **fields: Any) -> JournalTrail:
    """A keyed trail on ``url``, its lane indexed in this process unless not ``indexed``.

    ``fields`` are ``[audit]`` settings, taken as given (``journal_segment_mb=0``: a new
    segment at every batch); its journal is ``journal`` in the key folder (``guard audit
    verify`` run with the default settings checks the store alone) and its index
    ``external`` (:class:`~tests.guard.audit.conftest.IndexedTrail` follows it).
    """
    settings = AuditSettings(store=url, signing_key=keys.signing, hmac_key=keys.hmac).model_copy(
        update={"journal": keys.signing.parent / "journal", "index": "external", **fields})
    return IndexedTrail(settings, timeout=timeout) if indexed else JournalTrail(settings)


def event(subject: str, **fields: Any) -> AuditEvent:
    """A decision about ``subject`` (raw id; stored as its pseudonym)."""
    values: dict[str, Any] = {"caller": "svc:crm", "purpose": "relationship.management",
                              "categories": ("contact.email",), "action": "read",
                              "allowed": True, "reason": "allowed", "subject": pseudonym(subject)}
    values.update(fields)
    return AuditEvent(new_event_id(), EventKind.DECISION, utc_now(), **values)


def pseudonym(subject: str) -> str:
    """The stored pseudonym of a raw subject id."""
    return pseudonymise(HMAC_KEY, subject)


def record(url: str, keys: AuditKeys, subjects: list[str], *, close: bool = True,
           **kwargs: Any) -> list[AuditEvent]:
    """Record one decision per subject, close the trail, return the events as stored."""
    t = trail(url, keys, **kwargs)
    for subject in subjects:
        record_event(t, event(subject))
    if close:
        t.close()
    else:
        t.flush()  # durable and indexed
    return stored_events(url)


def stored_events(url: str) -> list[AuditEvent]:
    """Every stored event, by chain and seq."""
    store = open_store(url, create=False)
    try:
        rows = store.rows(f"SELECT {EVENT_COLUMNS} FROM audit_event "
                          "ORDER BY writer_id, seq")
    finally:
        store.close()
    return [row_event(r) for r in rows]


def forge_hash(event: AuditEvent, fmt: str) -> str:
    """The hash an attacker without the chain key computes for ``event`` as it now stands.

    ``fmt`` is ``"v2"`` (the unkeyed format older chains use), ``"v3"`` or ``"v4"`` (the
    keyed formats, under a key the attacker guessed).
    """
    guessed = ChainKey(b"guessed" * 4) if fmt in ("v3", "v4") else None
    return linked(event, event.writer_id, event.seq, event.prev_hash, guessed,
                  4 if fmt == "v4" else 3).hash


def rechain(url: str, events: list[AuditEvent], fmt: str, *, start: int = 1,
            prev: str = GENESIS_HASH) -> None:
    """Rewrite ``events`` (one chain, in order) as seq ``start``.. with forged hashes."""
    ids = tuple(ev.event_id for ev in events)
    marks = ", ".join("?" * len(ids))
    sql(url, f"UPDATE audit_event SET seq = -seq WHERE event_id IN ({marks})", ids)
    for seq, ev in enumerate(events, start=start):
        moved = dataclasses.replace(ev, seq=seq, prev_hash=prev)
        digest = forge_hash(moved, fmt)
        sql(url, "UPDATE audit_event SET seq = ?, prev_hash = ?, hash = ? WHERE event_id = ?",
            (seq, prev, digest, ev.event_id))
        prev = digest


def check(url: str, keys: AuditKeys, witness: Path | None = None) -> VerifyReport:
    """``verify`` with the auditor's keys (and the witness file, if given)."""
    store = open_store(url, create=False)
    try:
        return verify(store, load_public_key(keys.public), chain_key=CHAIN_KEY,
                      witness=read_witness(witness) if witness is not None else None)
    finally:
        store.close()


def cli_verify(url: str, keys: AuditKeys, tmp_path: Path, *extra: str
               ) -> subprocess.CompletedProcess[str]:
    """``guard audit verify`` as an auditor runs it."""
    config = tmp_path / "empty-guard.toml"
    config.write_text("")
    return subprocess.run(
        [*GUARD, "audit", "verify", "--store", url, "--public-key", str(keys.public),
         "--hmac-key", str(keys.hmac), *extra],
        capture_output=True, text=True, check=False, cwd=tmp_path,
        env={"GUARD_CONFIG": str(config), "PATH": "/usr/bin:/bin",
             "PYTHONPATH": str(Path(__file__).resolve().parents[2])},  # this tree's guard
    )


class PrivatePostgres:
    """A PostgreSQL server of one test, stopped and restarted on the same port and data."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            pytest.skip("PostgreSQL server binaries not found")
        self._bin = bindir
        # Not under a 0700 tmp tree of root's: the postgres user must reach it.
        base = self._base = Path(tempfile.mkdtemp(prefix="guard-pg-tamper-"))
        self._data = base / "data"
        self._data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(base, "postgres")
            shutil.chown(self._data, "postgres")
        subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(self._data), "-U",
                                     "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]),
                       check=True, capture_output=True)
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers."""
        self._server = subprocess.Popen(
            _as_postgres([str(self._bin / "postgres"), "-D", str(self._data), "-p",
                          str(self.port), "-h", "127.0.0.1", "-k", str(self._base)]),
            stdout=subprocess.DEVNULL, stderr=(self._base / "server.log").open("ab"),
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self._server.poll() is not None or time.monotonic() > deadline:
                    log = (self._base / "server.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"PostgreSQL did not start: {log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (fast shutdown: connections are cut) and wait until it is gone."""
        if self._server is not None:
            subprocess.run(_as_postgres([str(self._bin / "pg_ctl"), "stop", "-D",
                                         str(self._data), "-m", "fast", "-w"]),
                           check=False, capture_output=True)
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None


    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self._base, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started :class:`PrivatePostgres` of this test alone, removed afterwards."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()
