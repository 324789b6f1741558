"""``http_context``: one shared, immutable ``HttpContext`` per method, route, status and cut-off.

Building a frozen dataclass with a default factory costs about 10,000 instructions;
the middleware asks for the same few (a route's decisions, a write's outcome, a
refusal's status) on every request, so each is built once and shared (at most
``_CONTEXTS`` of them, then forgotten all at once). What is shared is what would have
been built: equal, and read the same by the audit's event fields.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from guard._types import HttpContext
from guard.audit._event import outcome_fields
from middleware import _enforce
from middleware._enforce import http_context

_methods = st.sampled_from(["GET", "PUT", "POST", "DELETE", "X-ODD"])
_routes = st.sampled_from(["/customers/{customer_id}", "/customers", "<undeclared>", ""])
_statuses = st.one_of(st.none(), st.sampled_from([200, 201, 204, 401, 403, 500]))


@given(_methods, _routes, _statuses, st.booleans())
def test_a_shared_context_is_the_one_built_afresh(method: str, route: str,
                                                  status: int | None, aborted: bool) -> None:
    shared = http_context(method, route, status, aborted)
    fresh = HttpContext(method, route, status, aborted=aborted)
    assert shared == fresh
    assert http_context(method, route, status, aborted) is shared
    if status is not None:
        assert outcome_fields("d-1", status, shared) == outcome_fields("d-1", status, fresh)


def test_the_shared_contexts_are_bounded() -> None:
    for n in range(_enforce._CONTEXTS + 10):
        http_context("GET", f"/r/{n}", 200)
    assert 0 < len(_enforce._contexts) <= _enforce._CONTEXTS
