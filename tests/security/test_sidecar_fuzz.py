"""The sidecar's decision API and check endpoint fuzzed from its own OpenAPI document.

schemathesis generates requests from the document the sidecar serves (valid
and invalid ones) for the decision API and the check endpoint, sends them to
a real sidecar under uvicorn on loopback, and checks every answer: no server
error, a documented status, a documented content type, a body that matches
its schema.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sidecarkit import ServerThread, policy_copy, serve_sidecar, sidecar_settings
from tokenkit import claims

from middleware.sidecar import openapi_document

POLICIES = Path(__file__).resolve().parents[2] / "policies"
# The decision API, the check endpoint and health; the subject register has its own tests.
SCHEMA = schemathesis.openapi.from_dict(openapi_document("/v1/check", version="0")).include(
    tag_regex="^(decide|check|health)$"
)
ASKER = "svc:support"
# The asker's token is made when cases are generated (at collection), before any fixture runs.
_SECRET = secrets.token_hex(32).encode()  # no whitespace for the key file reader to strip
_TOKEN = jwt.encode(claims(sub=ASKER, exp=int(time.time()) + 86400), _SECRET, "HS256")


@SCHEMA.auth()
class _Bearer:
    """A valid token of the asker; schemathesis also sends cases without it or with a bad one."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return _TOKEN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[ServerThread]:
    """A sidecar whose asker may ask /v1/decide about any caller (so fuzzed callers are judged)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    policy = policy_copy(tmp / "policy", POLICIES)
    secret = tmp / "hs256.key"
    secret.write_bytes(_SECRET)
    identity = keys.identity(hs256_secret_file=secret)
    settings_ = sidecar_settings(tmp, policy, identity, decide_askers=[ASKER])
    with serve_sidecar(settings_) as server:
        yield server


@SCHEMA.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_is_documented_and_none_is_a_server_error(
    case: schemathesis.Case, sidecar: ServerThread
) -> None:
    case.call_and_validate(base_url=sidecar.url, timeout=10)
