"""The sidecar's own OpenAPI document, fuzzed by schemathesis against a real sidecar.

:func:`bearer_schema` gives the document (a few tags of it) with a valid token of an
asker attached to every case; :func:`fuzz_sidecar` serves a sidecar that accepts it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jwt
import schemathesis
from sidecarkit import ServerThread, policy_copy, serve_sidecar, sidecar_settings
from tokenkit import claims

from middleware.sidecar import openapi_document

POLICIES = Path(__file__).resolve().parents[2] / "policies"


def bearer_schema(tag_regex: str, asker: str) -> tuple[schemathesis.BaseSchema, bytes]:
    """The operations tagged ``tag_regex``, with a token of ``asker``; and the HS256 secret.

    The token is made here, when cases are generated (at collection), before any
    fixture runs; schemathesis also sends cases without it or with a bad one.

    Args:
        tag_regex: which operations of the document to fuzz, by tag.
        asker: the caller the token names.
    """
    schema = schemathesis.openapi.from_dict(openapi_document("/v1/check", version="0")).include(
        tag_regex=tag_regex
    )
    secret = secrets.token_hex(32).encode()  # no whitespace for the key file reader to strip
    token = jwt.encode(claims(sub=asker, exp=int(time.time()) + 86400), secret, "HS256")

    @schema.auth()
    class _Bearer:
        """A valid token of the asker."""

        def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
            return token

        def set(self, case: schemathesis.Case, data: str,
                context: schemathesis.AuthContext) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    return schema, secret


@contextmanager
def fuzz_sidecar(tmp: Path, secret: bytes, keys: Any, **options: Any) -> Iterator[ServerThread]:
    """A sidecar on the shipped policy that accepts HS256 tokens signed with ``secret``.

    Args:
        tmp: an empty folder for its policy copy, key file and stores.
        secret: the HS256 secret from :func:`bearer_schema`.
        keys: the ``keys`` fixture.
        options: further :func:`sidecarkit.sidecar_settings` options.
    """
    policy = policy_copy(tmp / "policy", POLICIES)
    secret_file = tmp / "hs256.key"
    secret_file.write_bytes(secret)
    settings_ = sidecar_settings(tmp, policy, keys.identity(hs256_secret_file=secret_file),
                                 **options)
    with serve_sidecar(settings_) as server:
        yield server
