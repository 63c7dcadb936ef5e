"""OpenAPI helpers: the error responses each route documents, and the ones every route shares.

Per-route errors are declared next to the handler (`@docs(responses=...)`). What any route may answer
whatever it does — 503 when a backing service is down, 429 on a rate-limited write, 400 for a bad path
or query parameter — is added to every operation of the generated spec by `add_common_errors`, so the
spec never under-documents what a client can see.
"""

from __future__ import annotations

from typing import Any

from handlers.schemas import ErrorSchema

E = ErrorSchema
INVALID = {400: {"schema": E, "description": "validation_error (details.fields names each bad field), malformed_json"}}
TOO_LARGE = {413: {"schema": E, "description": "payload_too_large: the body is over 64 KiB"}}
ADMIN_ONLY = {401: {"schema": E, "description": "unauthorized, invalid_token"},
              403: {"schema": E, "description": "admin_required"}}
OWNER_ONLY = {401: {"schema": E, "description": "unauthorized, invalid_token"},
              403: {"schema": E, "description": "not_owner"}}
USER_ONLY = {401: {"schema": E, "description": "unauthorized, invalid_token"},
             403: {"schema": E, "description": "not_owner, forbidden (the admin token cannot act for a user)"}}


def not_found(code: str) -> dict[int, dict[str, object]]:
    return {404: {"schema": E, "description": code}}


ERROR_REF = {"$ref": "#/definitions/Error"}
COMMON = {
    "503": "database_unavailable, redis_unavailable: a backing service is down; retry after Retry-After",
}
WRITE_COMMON = {"429": "rate_limited: too many writes from this user or address; retry after Retry-After"}
PARAMS_COMMON = {"400": "validation_error: a path, query or header parameter is invalid"}
WRITES = {"post", "put", "patch", "delete"}


def add_common_errors(spec: dict[str, Any]) -> None:
    """Add the errors every operation can answer to each operation of a Swagger 2.0 spec (in place)."""
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            if path in ("/health", "/metrics"):
                continue  # answered by the process alone
            extra = dict(COMMON)
            if method in WRITES:
                extra |= WRITE_COMMON
            if operation.get("parameters"):
                extra |= PARAMS_COMMON
            for code, description in extra.items():
                operation["responses"].setdefault(code, {"description": description, "schema": ERROR_REF})
