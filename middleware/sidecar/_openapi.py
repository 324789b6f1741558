"""The OpenAPI 3.1 document of the sidecar's own endpoints, built from the API models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from middleware.fields import withheld_optional
from middleware.sidecar._decide_api import (
    DecideBatch,
    DecideBatchResult,
    DecideRequest,
    DecideResult,
    Problem,
)
from middleware.sidecar._paths import (
    CHECK_METHODS,
    MAX_TARGET,
    METHOD_PATTERN,
    SEGMENT_PATTERN,
    TARGET_PATTERN,
)
from middleware.sidecar._subjects_api import MODELS as SUBJECT_MODELS
from middleware.sidecar._subjects_api import openapi_paths as subject_paths

_REF = "#/components/schemas/{model}"
_MODELS: tuple[type[BaseModel], ...] = (
    DecideRequest,
    DecideBatch,
    DecideResult,
    DecideBatchResult,
    Problem,
    *SUBJECT_MODELS,
)


def _schemas(models: tuple[type[BaseModel], ...] = _MODELS) -> dict[str, Any]:
    """The components' schemas of ``models``; a field that may be removed is never required."""
    schemas: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return withheld_optional(schemas)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }


def _check_operation(summary: str) -> dict[str, Any]:
    headers = {
        name: {"schema": {"type": "string"}, "description": text}
        for name, text in (
            ("x-guard-caller", "The proven caller."),
            ("x-guard-purpose", "The declared purpose."),
            ("x-guard-decision-id", "Id of the audited decision."),
            ("x-guard-policy-version", "Version of the policy that decided."),
        )
    }
    return {
        "summary": summary,
        "tags": ["check"],
        # A public route is judged without a token; every other route needs one.
        "security": [{"bearer": []}, {}],
        "responses": {
            "200": {"description": "Allowed (or a public route).", "headers": headers},
            "400": _problem(
                "No original request named, or a target or method refused "
                "(an audited malformed_request)."
            ),
            "401": _problem("No valid caller identity."),
            "403": _problem("Denied; the reason says which check refused."),
        },
    }


def openapi_document(check_path: str, *, version: str) -> dict[str, Any]:
    """The OpenAPI document; ``check_path`` is where the check endpoint is served."""
    check = check_path.rstrip("/") or "/"
    nginx_check = {
        **_check_operation("Check for nginx auth_request"),
        "parameters": [
            {
                "name": "X-Original-URI",
                "in": "header",
                "required": True,
                "description": "The original request target as sent (nginx: $request_uri). "
                "Origin-form only; a target outside this pattern is refused with 400.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_TARGET,
                    "pattern": TARGET_PATTERN,
                },
            },
            {
                "name": "X-Original-Method",
                "in": "header",
                "required": False,
                "description": "The original method (default: the check request's own).",
                "schema": {"type": "string", "pattern": METHOD_PATTERN},
            },
        ],
    }
    envoy_check = {
        **_check_operation("Check for Envoy ext_authz (original path appended)"),
        "parameters": [
            {
                "name": "original_path",
                "in": "path",
                "required": True,
                "description": "The original path after the check path (one segment here; "
                "Envoy appends the whole path, judged like X-Original-URI).",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_TARGET - 1,  # after the "/" that joins it to the check path
                    "pattern": SEGMENT_PATTERN,
                },
            },
        ],
    }
    decide_body = {"oneOf": [_ref("DecideRequest"), _ref("DecideBatch")]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "purpose-guard sidecar",
            "version": version,
            "description": "Purpose and need-to-know decisions, audited, for any service.",
        },
        "paths": {
            "/v1/decide": {
                "post": {
                    "summary": "Decide one access request or a batch",
                    "operationId": "decide",
                    "tags": ["decide"],
                    "security": [{"bearer": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": decide_body}},
                    },
                    "responses": {
                        "200": {
                            "description": "The decisions (DecideResult for one request, "
                            "DecideBatchResult for a batch).",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [_ref("DecideResult"), _ref("DecideBatchResult")]
                                    }
                                }
                            },
                        },
                        "400": _problem(
                            "Malformed JSON or a request that does not fit the schema."
                        ),
                        "401": _problem("No valid caller identity."),
                        "403": _problem("The asker may not ask about another caller (recorded)."),
                        "413": _problem("Body too large."),
                    },
                }
            },
            **subject_paths(_problem),
            # The check request carries the original method (Envoy; nginx with the original's).
            check: {
                method.lower(): {**nginx_check, "operationId": f"check_nginx_{method.lower()}"}
                for method in CHECK_METHODS
            },
            check + "/{original_path}": {
                method.lower(): {**envoy_check, "operationId": f"check_envoy_{method.lower()}"}
                for method in CHECK_METHODS
            },
            "/healthz": {
                "get": {
                    "summary": "Alive, with the policy version in force",
                    "operationId": "healthz",
                    "tags": ["health"],
                    "responses": {"200": {"description": "Alive."}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Ready: policy loaded and audit store writable",
                    "operationId": "readyz",
                    "tags": ["health"],
                    "responses": {
                        "200": {"description": "Ready."},
                        "503": {"description": "The audit store does not take writes."},
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
