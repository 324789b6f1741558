"""Enforcement points: the ASGI middleware and the sidecar.

``GuardMiddleware`` guards a Starlette or FastAPI app in-process; routes are
declared with :func:`guarded` (or ``policies/routes.csv``) and callers prove who
they are with JWT service tokens (:class:`Authenticator`).
"""

from __future__ import annotations

from middleware._enforce import Outcome, enforce
from middleware.asgi import GuardMiddleware
from middleware.fields import REMOVE, Category, FieldPlan, categories_of, plan_for
from middleware.identity import Authenticator, Caller, IdentityError
from middleware.problem import PROBLEM_MEDIA_TYPE
from middleware.routes import RouteMatch, RouteRule, RouteTable, guarded, public

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "REMOVE",
    "Authenticator",
    "Caller",
    "Category",
    "FieldPlan",
    "GuardMiddleware",
    "IdentityError",
    "Outcome",
    "RouteMatch",
    "RouteRule",
    "RouteTable",
    "categories_of",
    "enforce",
    "guarded",
    "plan_for",
    "public",
]
