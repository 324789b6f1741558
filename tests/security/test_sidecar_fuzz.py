"""The sidecar's decision API and check endpoint fuzzed from its own OpenAPI document.

schemathesis generates requests from the document the sidecar serves (valid
and invalid ones) for the decision API and the check endpoint, sends them to
a real sidecar under uvicorn on loopback, and checks every answer: no server
error, a documented status, a documented content type, a body that matches
its schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sidecarkit import ServerThread

from tests.security.fuzzkit import bearer_schema, fuzz_sidecar

ASKER = "svc:support"
# The decision API, the check endpoint and health; the subject register has its own tests.
SCHEMA, _SECRET = bearer_schema("^(decide|check|health)$", ASKER)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[ServerThread]:
    """A sidecar whose asker may ask /v1/decide about any caller (so fuzzed callers are judged)."""
    with fuzz_sidecar(tmp_path_factory.mktemp("fuzz"), _SECRET, keys,
                      decide_askers=[ASKER]) as server:
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
