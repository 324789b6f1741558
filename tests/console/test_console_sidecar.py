"""The console mounted in the sidecar: served there, never forwarded upstream."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from consolekit import AUDITOR, SUBJECT, UvicornThread, console_settings, token

from guard._errors import ConfigError
from guard.config import load_settings
from middleware.sidecar import create_app


def test_the_sidecar_serves_its_console_and_records_look_ups(tmp_path: Path) -> None:
    settings = console_settings(tmp_path, mount_in_sidecar=True)
    # A proxy to nowhere: anything forwarded would be a 401 (no token) or a 502.
    settings = settings.model_copy(update={"sidecar": settings.sidecar.model_copy(
        update={"upstream": "http://127.0.0.1:9"})})
    with UvicornThread(create_app(settings)) as server, \
            httpx.Client(base_url=server.url) as client:
        assert client.get("/console/signin").status_code == 200
        signed = client.post("/console/signin", data={"token": token(settings, AUDITOR)})
        assert signed.headers["location"] == "/console/signin/done"
        assert client.get("/console/signin/done").headers["location"] == "/console/decisions"
        assert client.get("/console/decisions").status_code == 200
        looked = client.post("/console/subject", data={"subject": SUBJECT})
        assert looked.status_code == 303
        assert looked.headers["location"].startswith("/console/subject/")
        assert client.get(looked.headers["location"]).status_code == 200
        assert client.get("/consoles").status_code == 401  # not the console: enforced


def test_a_mount_path_must_be_below_the_root() -> None:
    with pytest.raises(ConfigError, match=r"console\.mount_path"):
        load_settings(console={"mount_path": "/"})
