"""The subject register API fuzzed from the sidecar's own OpenAPI document.

schemathesis generates requests (valid and invalid) for ``/v1/subjects/entries``,
``/v1/subjects/lookup`` and ``/v1/filter`` from the document the sidecar serves,
sends them to a real sidecar under uvicorn on loopback as a caller granted
``rights.request`` (and without a token, or with a bad one), and checks every
answer: no server error, a documented status and content type, a body that matches
its schema. Refusals of schema-valid entries on their meaning (422) are expected.
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
SCHEMA = schemathesis.openapi.from_dict(openapi_document("/v1/check", version="0")).include(
    tag_regex="^subjects$"
)
ASKER = "svc:support"  # holds read and write on rights.request
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
    tmp = tmp_path_factory.mktemp("rights-fuzz")
    policy = policy_copy(tmp / "policy", POLICIES)
    secret = tmp / "hs256.key"
    secret.write_bytes(_SECRET)
    settings_ = sidecar_settings(tmp, policy, keys.identity(hs256_secret_file=secret))
    with serve_sidecar(settings_) as server:
        yield server


@SCHEMA.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_answer_is_documented_and_none_is_a_server_error(
    case: schemathesis.Case, sidecar: ServerThread
) -> None:
    # A schema-valid entry may still be refused on its meaning (422 register_refused: an
    # unknown purpose, an objection covering no objectable purpose...), which no schema
    # can express; every other check stays on.
    case.call_and_validate(base_url=sidecar.url, timeout=30,
                           excluded_checks=[schemathesis.checks.positive_data_acceptance])
