"""The subject register API fuzzed from the sidecar's own OpenAPI document.

schemathesis generates requests (valid and invalid) for ``/v1/subjects/entries``,
``/v1/subjects/lookup`` and ``/v1/filter`` from the document the sidecar serves,
sends them to a real sidecar under uvicorn on loopback as a caller granted
``rights.request`` (and without a token, or with a bad one), and checks every
answer: no server error, a documented status and content type, a body that matches
its schema. Refusals of schema-valid entries on their meaning (422) are expected.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sidecarkit import ServerThread
from tokenkit import claims

from tests.security.fuzzkit import bearer_schema, fuzz_sidecar

ASKER = "svc:support"  # holds read and write on rights.request
SCHEMA, _SECRET = bearer_schema("^subjects$", ASKER)
AUTH = {"authorization": "Bearer " + jwt.encode(
    claims(sub=ASKER, exp=int(time.time()) + 86400), _SECRET, "HS256")}


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Iterator[ServerThread]:
    with fuzz_sidecar(tmp_path_factory.mktemp("rights-fuzz"), _SECRET, keys) as server:
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


@pytest.mark.parametrize("effective", [0, 1_893_456_000, "2030-01-01T00:00:00Z",
                                       "2030-01-01T00:00:00", "20300101", 2030.0])
def test_an_end_date_the_schema_refuses_is_refused(sidecar: ServerThread, effective: Any) -> None:
    """The document says ``effective`` is a ``YYYY-MM-DD`` string; the fuzzer's negative
    cases send numbers and date-times, which must be refused, not read as a date."""
    answer = httpx.post(f"{sidecar.url}/v1/subjects/entries", timeout=30, headers=AUTH, json={
        "subject": "c-fuzz-end", "kind": "end_of_relationship", "effective": effective})
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] == "malformed_request"
    assert "effective" in answer.json()["detail"]


def test_an_end_date_as_the_schema_says_is_recorded(sidecar: ServerThread) -> None:
    answer = httpx.post(f"{sidecar.url}/v1/subjects/entries", timeout=30, headers=AUTH, json={
        "subject": "c-fuzz-end", "kind": "end_of_relationship", "effective": "2030-01-01"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["effective"] == "2030-01-01"
