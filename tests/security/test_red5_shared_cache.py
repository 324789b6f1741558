"""Fifth review: a shared cache in front of the sidecar never keeps a guarded answer.

A caching proxy (nginx's ``proxy_cache``, a CDN) in front of the sidecar that keeps
an answer serves the next caller from its copy: that request never reaches the
guard, so it is neither judged nor audited. An upstream that is not written for
the guard marks its answers ``public`` or speaks to the cache directly
(``X-Accel-Expires``, ``CDN-Cache-Control``, ``Surrogate-Control``), and the sidecar
passed those on: a caller without a token was served the answer another caller
was allowed. Every answer the sidecar judged now leaves ``Cache-Control: private``
with those headers dropped; an answer on a public route is passed as it came.
Real nginx in front (a cache zone) and as the upstream, a real uvicorn sidecar.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sidecarkit import Nginx, need_nginx, policy_copy, serve_sidecar, sidecar_settings

from bench._pg import free_port
from middleware._private import private_answer

POLICIES = Path(__file__).resolve().parents[2] / "policies"
PURPOSE = "relationship.management"  # svc:crm may read contact under it

# Each upstream path marks its answer for shared caches its own way.
MARKS = {
    "public": 'add_header Cache-Control "public, max-age=600" always;',
    "s-maxage": 'add_header Cache-Control "s-maxage=600" always;',
    "x-accel-expires": "add_header X-Accel-Expires 600 always;",  # no Cache-Control at all
}


@pytest.fixture
def cached_sidecar(tmp_path: Path, keys: Any) -> Iterator[str]:
    """The front nginx's URL: a cache zone in front of the sidecar, nginx as its upstream."""
    need_nginx()
    upstream, front = free_port(), free_port()
    answer = 'return 200 "secret of $http_x_guard_caller\\n";'
    locations = "\n".join(f"        location /echo/{name} {{ {mark} {answer} }}"
                          for name, mark in MARKS.items())
    public = ('        location /public/ { add_header Cache-Control "public, max-age=600" always; '
              'return 200 "brochure\\n"; }')
    identity = keys.identity(development=False)
    settings = sidecar_settings(tmp_path, policy_copy(tmp_path / "policy", POLICIES), identity,
                                upstream=f"http://127.0.0.1:{upstream}")
    with serve_sidecar(settings) as sidecar:
        nginx = Nginx(tmp_path / "nginx", f"""
    proxy_cache_path {tmp_path / 'nginx' / 'cache'} levels=1 keys_zone=guarded:1m;
    server {{
        listen 127.0.0.1:{upstream};
{locations}
{public}
    }}
    server {{
        listen 127.0.0.1:{front};
        location / {{
            proxy_cache guarded;
            proxy_pass http://127.0.0.1:{sidecar.port};
            add_header X-Cache $upstream_cache_status always;
        }}
    }}""").start(upstream, front)
        try:
            yield f"http://127.0.0.1:{front}"
        finally:
            nginx.stop()


@pytest.mark.parametrize("mark", list(MARKS))
def test_a_guarded_answer_is_never_served_from_a_shared_cache(
        cached_sidecar: str, keys: Any, mark: str) -> None:
    url = f"{cached_sidecar}/echo/{mark}"
    allowed = httpx.get(url, timeout=10, headers={
        "authorization": f"Bearer {keys.mint(sub='svc:crm')}", "x-purpose": PURPOSE})
    assert allowed.status_code == 200, allowed.text
    assert "secret of svc:crm" in allowed.text

    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 401, (anonymous.headers.get("x-cache"), anonymous.text)
    assert "secret" not in anonymous.text
    assert "private" in allowed.headers["cache-control"]


def test_a_public_answer_keeps_its_cache_headers(cached_sidecar: str) -> None:
    first = httpx.get(f"{cached_sidecar}/public/brochure", timeout=10)
    second = httpx.get(f"{cached_sidecar}/public/brochure", timeout=10)
    assert first.status_code == second.status_code == 200
    assert first.headers["cache-control"] == "public, max-age=600"
    assert second.headers["x-cache"] == "HIT"


def test_headers_that_speak_to_shared_caches_are_dropped() -> None:
    answer = private_answer([
        (b"content-type", b"text/plain"), (b"cache-control", b"public, max-age=60"),
        (b"cache-control", b's-maxage=600, no-cache="set-cookie", private="x-a"'),
        (b"cdn-cache-control", b"max-age=600"), (b"cloudflare-cdn-cache-control", b"max-age=9"),
        (b"surrogate-control", b"max-age=600"), (b"x-accel-expires", b"600"),
        (b"edge-control", b"cache-maxage=600")])
    assert answer == [(b"content-type", b"text/plain"),
                      (b"cache-control", b'private, max-age=60, no-cache="set-cookie"')]
