"""The console reads at most a small form from anyone, signed in or not, whatever the framing.

Its sign-in form is open to everyone (it is how one signs in), in ``guard console`` and in
the sidecar that mounts the console; a body read whole before its size was looked at let
a client with no credentials fill the serving process's memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from memkit import PeakRss, chunked, post_streaming, status_of
from sidecarkit import ServerThread, free_port, policy_copy, sidecar_settings

from guard.config import ConsoleSettings
from middleware.console import create_console
from middleware.sidecar import create_app

POLICIES = Path(__file__).resolve().parents[2] / "policies"
MB = 1 << 20
AUDITOR = "svc:support"


def _settings(tmp: Path, keys: Any, *, mounted: bool) -> Any:
    policy = policy_copy(tmp / "policy", POLICIES)
    settings = sidecar_settings(tmp, policy, keys.identity())
    console = ConsoleSettings(auditors=[AUDITOR], mount_in_sidecar=mounted,
                              secure_cookies=False)  # httpx: Secure cookies over HTTPS only
    return settings.model_copy(update={"console": console})


@pytest.fixture(scope="module", params=["guard console", "sidecar"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           keys: Any) -> Iterator[tuple[ServerThread, str]]:
    """The console under uvicorn in a thread of this process (the process whose RSS is read):
    on its own, and mounted in the sidecar; with the path prefix of its sign-in."""
    tmp = tmp_path_factory.mktemp("consolebody")
    mounted = request.param == "sidecar"
    settings = _settings(tmp, keys, mounted=mounted)
    app = create_app(settings) if mounted else create_console(settings)
    with ServerThread(app, free_port()) as server:
        yield server, "/console" if mounted else ""


def test_a_huge_sign_in_body_is_refused_and_memory_stays_flat(
    served: tuple[ServerThread, str],
) -> None:
    server, prefix = served
    head = (b"POST " + prefix.encode() + b"/signin HTTP/1.1\r\nHost: console\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    with PeakRss() as rss:
        before = rss.peak
        status = status_of(post_streaming(server.port, head, chunked(160 * MB, b"a")))
    # Reading the whole body first held all 160 MB (and a joined copy) in this process.
    assert rss.peak - before < 40 * MB, f"RSS grew by {(rss.peak - before) // MB} MB"
    assert status == 413


def test_a_declared_length_past_the_bound_is_refused_unread(
    served: tuple[ServerThread, str],
) -> None:
    server, prefix = served
    head = (b"POST " + prefix.encode() + b"/signin HTTP/1.1\r\nHost: console\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 400000000\r\n\r\n")
    # The client sends a little of what it declared: the answer must not wait for the rest.
    assert status_of(post_streaming(server.port, head, iter([b"token=" + b"a" * 1024]))) == 413


def test_a_sign_in_form_within_the_bound_is_read(
    served: tuple[ServerThread, str], keys: Any,
) -> None:
    server, prefix = served
    with httpx.Client(base_url=server.url, timeout=10) as client:
        good = client.post(prefix + "/signin", data={"token": keys.mint("hs", sub=AUDITOR)})
        assert good.status_code == 303
        assert good.headers["location"] == prefix + "/signin/done"
        wrong = client.post(prefix + "/signin", data={"token": "x" * 2000})
        assert wrong.status_code == 401


def test_an_auditors_subject_form_past_the_bound_is_refused(
    served: tuple[ServerThread, str], keys: Any,
) -> None:
    server, prefix = served
    with httpx.Client(base_url=server.url, timeout=10) as client:
        signed = client.post(prefix + "/signin", data={"token": keys.mint("hs", sub=AUDITOR)})
        assert signed.status_code == 303
        assert client.post(prefix + "/subject", data={"subject": "c" * 20_000}).status_code == 413
        looked = client.post(prefix + "/subject", data={"subject": "c-0042"})
        assert looked.status_code == 303
