"""Domain errors: each carries an HTTP status and a stable machine-readable `code`.

Booking and catalog code raise these; one middleware (REST) and one function (WebSocket) turn
them into the contract's error bodies.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status = 400
    code = "bad_request"
    message = "Bad request"

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.message
        self.details = details or {}
        if code:
            self.code = code
        self.headers = headers or {}
        super().__init__(self.message)


class ValidationFailed(DomainError):
    status, code, message = 400, "validation_error", "The request has invalid fields"


class Unauthorized(DomainError):
    status, code, message = 401, "unauthorized", "A valid bearer token is required"


class Forbidden(DomainError):
    status, code, message = 403, "forbidden", "Not allowed for this user"


class NotFound(DomainError):
    status, code, message = 404, "not_found", "Not found"


class Conflict(DomainError):
    status, code, message = 409, "conflict", "Conflict"


class SeatsUnavailable(Conflict):
    code, message = "seats_unavailable", "Some of the requested seats are no longer available"

    def __init__(self, conflicts: list[str], message: str | None = None) -> None:
        super().__init__(message, details={"conflicts": sorted(conflicts)})
        self.conflicts = sorted(conflicts)


class NotPending(Conflict):
    code, message = "not_pending", "The reservation is not pending"


class HoldExpired(DomainError):
    status, code, message = 410, "hold_expired", "The hold has expired"


class Unprocessable(DomainError):
    status, code, message = 422, "unprocessable", "The request was understood but refused"


class RateLimited(DomainError):
    status, code, message = 429, "rate_limited", "Too many requests"


class ServiceUnavailable(DomainError):
    status, code, message = 503, "service_unavailable", "A backing service is unavailable"


class Overloaded(DomainError):
    """The node is at its bound of work in flight: answered at once, nothing touched, retry after a pause."""

    status, code, message = 503, "overloaded", "The server is busy, retry shortly"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, details={"retryAfter": retry_after}, headers={"Retry-After": str(retry_after)})
