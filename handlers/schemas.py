"""Marshmallow schemas of the REST contract: requests reject unknown fields and bound every value."""

from __future__ import annotations

import unicodedata
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from contract.rules import MAX_IDEMPOTENCY_KEY

MAX_NAME = 200
MAX_EMAIL = 254
MAX_PAGE = 500


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class LooseSchema(Schema):
    class Meta:
        unknown = EXCLUDE


def plain_text(value: str) -> None:
    """Refuse what PostgreSQL cannot store or a person cannot read: blank text, control characters
    (NUL above all: `text` refuses it) and lone surrogates (not encodable as UTF-8)."""
    if not value.strip():
        raise ValidationError("Must not be blank.")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ValidationError("Must not contain control characters.")


def Text(max_length: int, **kw: object) -> fields.String:  # noqa: N802 - used like a field class
    """A required-length, printable string field."""
    return fields.String(validate=[validate.Length(min=1, max=max_length), plain_text], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------ errors

class ErrorSchema(Schema):
    statusCode = fields.Integer(required=True)
    error = fields.String(required=True)
    code = fields.String(required=True, metadata={"description": "stable machine-readable code"})
    message = fields.String(required=True)
    details = fields.Dict(required=True)


# ------------------------------------------------------------ users

class UserCreateSchema(StrictSchema):
    name = Text(MAX_NAME, required=True)
    email = fields.Email(required=True, validate=validate.Length(max=MAX_EMAIL))


class UserSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
    createdAt = fields.DateTime(required=True)


class UserCreatedSchema(UserSchema):
    token = fields.String(required=True, metadata={"description": "bearer token; shown once"})


class UserPathSchema(LooseSchema):
    id = fields.UUID(required=True)


IdPathSchema = UserPathSchema


class PageQuerySchema(LooseSchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=MAX_PAGE))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))


# ------------------------------------------------------------ rooms

MAX_ROWS = 100
MAX_SEATS_PER_ROW = 100
MAX_CAPACITY = 5000


class RoomCreateSchema(StrictSchema):
    name = Text(MAX_NAME, required=True)
    rows = fields.Integer(validate=validate.Range(min=1, max=MAX_ROWS), strict=True)
    seatsPerRow = fields.Integer(validate=validate.Range(min=1, max=MAX_SEATS_PER_ROW), strict=True)
    capacity = fields.Integer(validate=validate.Range(min=1, max=MAX_CAPACITY), strict=True)

    @validates_schema
    def one_shape(self, data: dict[str, object], **_: object) -> None:
        has_grid = "rows" in data or "seatsPerRow" in data
        if has_grid and "capacity" in data:
            raise ValidationError("give either rows and seatsPerRow, or capacity, not both", "_schema")
        if has_grid and not ("rows" in data and "seatsPerRow" in data):
            raise ValidationError("rows and seatsPerRow go together", "_schema")
        if not has_grid and "capacity" not in data:
            raise ValidationError("give rows and seatsPerRow, or capacity", "_schema")
        if has_grid and data["rows"] * data["seatsPerRow"] > MAX_CAPACITY:  # type: ignore[operator]
            raise ValidationError(f"a room has at most {MAX_CAPACITY} seats", "_schema")


class SeatSchema(Schema):
    id = fields.UUID(required=True)
    rowLabel = fields.String(required=True)
    seatNumber = fields.Integer(required=True)


class RoomSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    capacity = fields.Integer(required=True)
    seats = fields.List(fields.Nested(SeatSchema))


# ------------------------------------------------------------ sessions

class SessionCreateSchema(StrictSchema):
    movieTitle = Text(MAX_NAME, required=True)
    startShowTime = fields.AwareDateTime(required=True)
    endShowTime = fields.AwareDateTime(required=True)
    roomId = fields.UUID(required=True)
    ticketPrice = fields.Decimal(required=True, places=2, validate=validate.Range(min=0, max=100_000),
                                 allow_nan=False, as_string=False)


class SessionSchema(Schema):
    id = fields.UUID(required=True)
    movieTitle = fields.String(required=True)
    startShowTime = fields.DateTime(required=True)
    endShowTime = fields.DateTime(required=True)
    roomId = fields.UUID(required=True)
    ticketPrice = fields.Float(required=True)


SEAT_STATUSES = ("AVAILABLE", "RESERVED", "SOLD")


class SeatMapQuerySchema(LooseSchema):
    status = fields.String(validate=validate.OneOf(SEAT_STATUSES))


class SessionSeatSchema(Schema):
    id = fields.UUID(required=True, metadata={"description": "session-seat id, used in reservations"})
    status = fields.String(required=True, validate=validate.OneOf(SEAT_STATUSES))
    version = fields.Integer(required=True)
    seat = fields.Nested(SeatSchema, required=True)


class RoomSummarySchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    capacity = fields.Integer(required=True)


class SeatMapSchema(Schema):
    session = fields.Nested(SessionSchema, required=True)
    room = fields.Nested(RoomSummarySchema, required=True, metadata={"description": "the session's room"})
    seats = fields.List(fields.Nested(SessionSeatSchema), required=True)


# ------------------------------------------------------------ health

class HealthSchema(Schema):
    status = fields.String(required=True)


class ReadySchema(Schema):
    status = fields.String(required=True, metadata={"description": "ok"})
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "postgres, redis, kafka -> ok | unavailable: <reason>"})


class NotReadySchema(ErrorSchema):
    status = fields.String(required=True, metadata={"description": "unavailable"})
    failed = fields.List(fields.String(), required=True, metadata={"description": "the services that did not answer"})
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


# ------------------------------------------------------------ reservations and sales

MAX_SEAT_IDS = 100  # hard bound of the list; the booking rule (MAX_SEATS_PER_HOLD) is checked after


class ReservationCreateSchema(StrictSchema):
    userId = fields.UUID(metadata={"description": "must be the token's user (required when AUTH_REQUIRED=false)"})
    sessionId = fields.UUID(required=True)
    sessionSeatIds = fields.List(fields.UUID(), required=True, validate=validate.Length(max=MAX_SEAT_IDS))


class IdempotencyHeaderSchema(LooseSchema):
    idempotency_key = Text(MAX_IDEMPOTENCY_KEY, data_key="Idempotency-Key")
    x_idempotency_key = Text(MAX_IDEMPOTENCY_KEY, data_key="x-idempotency-key")


class ReservedSeatSchema(Schema):
    id = fields.UUID(required=True, metadata={"description": "session-seat id"})
    rowLabel = fields.String(required=True)
    seatNumber = fields.Integer(required=True)


class ReservationSchema(Schema):
    id = fields.UUID(required=True)
    userId = fields.UUID(required=True)
    sessionId = fields.UUID(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("PENDING", "CONFIRMED", "CANCELLED", "EXPIRED")))
    expiresAt = fields.DateTime(required=True)
    createdAt = fields.DateTime()
    seats = fields.List(fields.Nested(ReservedSeatSchema), required=True)


class SaleSchema(Schema):
    id = fields.UUID(required=True)
    reservationId = fields.UUID(required=True)
    userId = fields.UUID(required=True)
    sessionId = fields.UUID(required=True)
    movieTitle = fields.String(required=True)
    startShowTime = fields.DateTime(required=True)
    totalAmount = fields.Float(required=True)
    confirmedAt = fields.DateTime(required=True)
    seats = fields.List(fields.Nested(ReservedSeatSchema), required=True)


class HoldHeaderSchema(IdempotencyHeaderSchema):
    admission = Text(256, data_key="X-Admission", metadata={
        "description": "the admission `POST /sessions/{id}/queue` gave, on a session with a waiting room"})


class JsonBoolean(fields.Boolean):
    """JSON `true` or `false` only: not 0, 1, "true" or "yes" (marshmallow's Boolean takes those)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class QueueConfigSchema(StrictSchema):
    enabled = JsonBoolean(required=True)
    rate = fields.Float(validate=validate.Range(min=0.1, max=10_000), metadata={
        "description": "buyers admitted per second, cluster-wide (required when enabled)"})


class QueueStateSchema(Schema):
    sessionId = fields.UUID(required=True)
    enabled = fields.Boolean(required=True)
    rate = fields.Float(allow_none=True)


class QueuePlaceSchema(Schema):
    sessionId = fields.UUID(required=True)
    enabled = fields.Boolean(required=True, metadata={"description": "false: no waiting room, hold at once"})
    position = fields.Integer(allow_none=True, metadata={"description": "place in join order, from 1"})
    ahead = fields.Integer(required=True, metadata={"description": "buyers in line before this one"})
    estimatedWaitSeconds = fields.Integer(required=True)
    admitted = fields.Boolean(required=True)
    admission = fields.String(allow_none=True, metadata={"description": "send as X-Admission with holds"})
    admissionExpiresAt = fields.DateTime(allow_none=True)
