"""A validator header spelled with ``_`` never reaches the app behind a minimised route.

A ``minimise`` route's answer must not be decided on a validator of the whole body: an
``If-None-Match`` naming the ETag of a body with a guessed email is a 304 when the guess
is right, an oracle for the withheld value. The middleware took those headers out of the
request by name, ``if-none-match``; ``If_None_Match`` passed, and a WSGI app (asgiref's
``WsgiToAsgi``, Django's META: ``HTTP_IF_NONE_MATCH`` for both spellings) read it as the
same header: a caller refused ``contact.email`` learnt the email by guessing. Names are
now compared with ``_`` read as ``-``, as such an app reads them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.wsgi import WsgiToAsgi
from tokenkit import UvicornThread, guard_settings
from werkzeug.wrappers import Request, Response

from middleware import GuardMiddleware
from tests.security.test_red4_fields import CALLER, PURPOSE

EMAIL = "ann@example.com"


def _body(email: str) -> bytes:
    return json.dumps({"customer_id": "c-1", "name": "Ann",
                       "contact": {"email": email}}).encode()


def _tag(email: str) -> str:
    return hashlib.md5(_body(email)).hexdigest()  # the ETag the app gives


def legacy(environ: dict[str, Any], start_response: Any) -> Any:
    """A WSGI app with conditional answers (werkzeug), as many legacy services have."""
    answer = Response(_body(EMAIL), mimetype="application/json")
    answer.set_etag(_tag(EMAIL))
    answer.make_conditional(Request(environ))
    return answer(environ, start_response)


@pytest.mark.parametrize("name", ["If_None_Match", "if_none_match", "If-None-Match"])
def test_a_validator_of_the_whole_body_never_reaches_the_app(
        tmp_path: Path, keys: Any, name: str) -> None:
    guard = GuardMiddleware(WsgiToAsgi(legacy), settings=guard_settings(tmp_path, keys))
    with UvicornThread(guard, log_level="critical", lifespan="off") as served:
        token = keys.mint(sub=CALLER)
        headers = {"authorization": f"Bearer {token}", "x-purpose": PURPOSE}
        url = served.url + "/customers/c-1/record"
        plain = httpx.get(url, headers=headers, timeout=10)
        assert plain.status_code == 200, plain.text
        assert EMAIL not in plain.text  # withheld from this caller
        wrong = httpx.get(url, headers={**headers, name: f'"{_tag("bob@example.com")}"'},
                          timeout=10)
        right = httpx.get(url, headers={**headers, name: f'"{_tag(EMAIL)}"'}, timeout=10)
    assert wrong.status_code == 200
    # Before, with "_": 304 for the right guess (the email confirmed), 200 for a wrong one.
    assert right.status_code == 200, "the app answered on a validator of the whole body"
    assert right.text == plain.text
