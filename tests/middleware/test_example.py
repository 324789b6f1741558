"""The quick start: ``python -m examples.customers`` prints requests that do what they say."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench._pg import free_port
from examples.customers import DEMOS, create_app
from guard.audit import wait_indexed
from guard.config import AuditSettings
from middleware.routes import RouteTable, rules_from_app

REPO = Path(__file__).resolve().parents[2]
GUARD = str(Path(sys.executable).with_name("guard"))


def test_routes_csv_declares_the_example_exactly() -> None:
    app = create_app(enforce=False)
    in_code = {(r.method, r.template, r.categories, r.action, r.subject, r.public)
               for r in rules_from_app(app)}
    csv_rules = RouteTable.from_csv(REPO / "policies" / "routes.csv").rules
    in_csv = {(r.method, r.template, r.categories, r.action, r.subject, r.public)
              for r in csv_rules}
    assert in_code == in_csv


@pytest.fixture
def example(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GUARD_CONFIG": os.devnull}
    proc = subprocess.Popen(
        [sys.executable, "-m", "examples.customers", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the example did not start:\n{out}\n{err}")
        time.sleep(0.1)
    try:
        yield url, tmp_path
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_printed_requests_do_what_they_say(example: tuple[str, Path]) -> None:
    url, cwd = example
    # The requests were printed before serving; read them back from a --print-only run.
    printed = subprocess.run(
        [sys.executable, "-m", "examples.customers", "--print-only", "--port",
         url.rsplit(":", 1)[1]],
        cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=60, check=True).stdout
    tokens = dict(re.findall(r"^export (TOKEN_\w+)=(\S+)$", printed, flags=re.M))
    assert tokens
    pairs = re.findall(r"^# (.+?)  -> (\d{3})\n(curl .+)$", printed, flags=re.M)
    assert len(pairs) == len(DEMOS)
    for title, status, command in pairs:
        # Pasted into a shell after the printed exports, as a person would.
        done = subprocess.run(["bash", "-c", command], env={**os.environ, **tokens},
                              capture_output=True, text=True, timeout=30, check=True)
        first = done.stdout.splitlines()[0]
        assert first.split()[1] == status, (title, done.stdout)
        if status in ("401", "403"):
            body = json.loads(done.stdout.split("\n\n", 1)[1])
            assert body["reason"] == title.split(":")[0]
    assert "guard audit query --since 1h --limit 50" in printed

    # The responses left once their events were durable in the journal; the store is
    # the index built from it a little later (the example's child indexer, at its pace),
    # so wait for it as a person reading the printed command would, a moment later.
    wait_indexed(AuditSettings(store=f"sqlite:///{cwd / 'audit.db'}"))
    query = subprocess.run([GUARD, "audit", "query", "--since", "1h", "--limit", "50",
                            "--json"], cwd=cwd, capture_output=True, text=True, timeout=60,
                           check=False)
    assert query.returncode == 0, query.stderr
    reasons = {json.loads(line)["reason"] for line in query.stdout.splitlines()}
    expected = {d.reason for d in DEMOS if d.reason != "public"}
    assert reasons == expected
