"""Marshmallow schemas of the REST contract: requests reject unknown fields and bound every value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from contract.rules import MAX_BEST_ROWS, MAX_IDEMPOTENCY_KEY, MAX_ROW_LABEL, Text

MAX_NAME = 200
MAX_EMAIL = 254
MAX_PAGE = 500


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class LooseSchema(Schema):
    class Meta:
        unknown = EXCLUDE


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


TIMESTAMP = "UTC with milliseconds and Z, e.g. 2026-02-01T19:00:00.000Z"


def Timestamp(**kw: object) -> fields.DateTime:  # noqa: N802 - used like a field class
    return fields.DateTime(required=True, metadata={"description": TIMESTAMP}, **kw)  # type: ignore[arg-type]


class UserSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    email = fields.String(required=True)
    createdAt = Timestamp()
    updatedAt = Timestamp()


class UserCreatedSchema(UserSchema):
    token = fields.String(required=True, metadata={"description": "bearer token; shown once"})


class UserPathSchema(LooseSchema):
    id = fields.UUID(required=True)


IdPathSchema = UserPathSchema


DEFAULT_PAGE = 100
MAX_OFFSET = 1_000_000


class PageQuerySchema(LooseSchema):
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(min=1, max=MAX_PAGE),
                           metadata={"description": f"page size (default {DEFAULT_PAGE}, at most {MAX_PAGE})"})
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET),
                            metadata={"description": "items to skip"})


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
    roomId = fields.UUID(required=True)
    rowLabel = fields.String(required=True)
    seatNumber = fields.Integer(required=True)
    createdAt = Timestamp()
    updatedAt = Timestamp()


class RoomCountSchema(Schema):
    seats = fields.Integer(required=True)


class RoomSummarySchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String(required=True)
    capacity = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("ACTIVE", "MAINTENANCE", "INACTIVE")))
    createdAt = Timestamp()
    updatedAt = Timestamp()


class RoomSchema(RoomSummarySchema):
    seats = fields.List(fields.Nested(SeatSchema), metadata={"description": "one room (GET /rooms/{id}, POST)"})
    count = fields.Nested(RoomCountSchema, data_key="_count", metadata={"description": "in the list"})


# ------------------------------------------------------------ sessions

# The window a show time must fall in: a session created now starts at most a day ago (late entries, tests of
# started sessions) and at most ten years ahead, and lasts at most a week. Far from every limit of a date
# computation (Python's datetime ends with year 9999; an offset can carry a time past it).
SHOW_TIME_PAST = timedelta(days=1)
SHOW_TIME_AHEAD = timedelta(days=3653)
MAX_SHOW_LENGTH = timedelta(days=7)


def show_time(value: datetime) -> None:
    now = datetime.now(UTC)
    try:
        inside = now - SHOW_TIME_PAST <= value <= now + SHOW_TIME_AHEAD
    except OverflowError:  # its offset carries it past year 9999 or before year 1
        inside = False
    if not inside:
        raise ValidationError("Must be a time from a day ago to ten years ahead.")


class SessionCreateSchema(StrictSchema):
    movieTitle = Text(MAX_NAME, required=True)
    startShowTime = fields.AwareDateTime(required=True, validate=show_time)
    endShowTime = fields.AwareDateTime(required=True, validate=show_time)
    roomId = fields.UUID(required=True)
    ticketPrice = fields.Decimal(required=True, places=2, validate=validate.Range(min=0, max=100_000),
                                 allow_nan=False, as_string=False)


    @validates_schema(skip_on_field_errors=True)
    def bounded_length(self, data: dict[str, Any], **_: object) -> None:
        if data["endShowTime"] - data["startShowTime"] > MAX_SHOW_LENGTH:
            raise ValidationError("A show lasts at most a week.", "endShowTime")

class SessionSchema(Schema):
    id = fields.UUID(required=True)
    movieTitle = fields.String(required=True)
    startShowTime = Timestamp()
    endShowTime = Timestamp()
    roomId = fields.UUID(required=True)
    ticketPrice = fields.Float(required=True)
    createdAt = Timestamp()
    updatedAt = Timestamp()


class SessionCountSchema(Schema):
    sessionSeats = fields.Integer(required=True, metadata={"description": "seats still AVAILABLE"})


SEAT_STATUSES = ("AVAILABLE", "RESERVED", "SOLD")


class SeatMapQuerySchema(LooseSchema):
    status = fields.String(validate=validate.OneOf(SEAT_STATUSES))


class SessionSeatSchema(Schema):
    id = fields.UUID(required=True, metadata={"description": "session-seat id, used in reservations"})
    sessionId = fields.UUID(required=True)
    seatId = fields.UUID(required=True)
    status = fields.String(required=True, validate=validate.OneOf(SEAT_STATUSES))
    version = fields.Integer(required=True)
    seat = fields.Nested(SeatSchema, required=True)


class SessionDetailSchema(SessionSchema):
    room = fields.Nested(RoomSummarySchema, metadata={"description": "GET /sessions, GET /sessions/{id}"})
    count = fields.Nested(SessionCountSchema, data_key="_count", metadata={"description": "in the list"})
    sessionSeats = fields.List(fields.Nested(SessionSeatSchema), metadata={"description": "GET /sessions/{id}"})


class SeatMapSchema(Schema):
    session = fields.Nested(SessionDetailSchema, required=True)
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
    sessionSeatIds = fields.List(fields.UUID(), validate=validate.Length(max=MAX_SEAT_IDS),
                                 metadata={"description": "the seats to hold; or give `quantity` instead"})
    quantity = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_SEAT_IDS), metadata={
        "description": "hold this many best available seats instead of named ones (docs/beyond.md)"})
    rows = fields.List(Text(MAX_ROW_LABEL), validate=validate.Length(min=1, max=MAX_BEST_ROWS), metadata={
        "description": "with `quantity`: choose only in these rows (labels)"})


class IdempotencyHeaderSchema(LooseSchema):
    idempotency_key = Text(MAX_IDEMPOTENCY_KEY, data_key="Idempotency-Key")
    x_idempotency_key = Text(MAX_IDEMPOTENCY_KEY, data_key="x-idempotency-key")


class ReservedSeatSchema(Schema):
    id = fields.UUID(required=True, metadata={"description": "session-seat id"})
    rowLabel = fields.String(required=True)
    seatNumber = fields.Integer(required=True)


RESERVATION_STATUSES = ("PENDING", "CONFIRMED", "CANCELLED", "EXPIRED")


class ReservationListQuerySchema(PageQuerySchema):
    sessionId = fields.UUID()
    status = fields.String(validate=validate.OneOf(RESERVATION_STATUSES))


class ReservationSeatSchema(Schema):
    id = fields.UUID(required=True, metadata={"description": "derived from the reservation and session-seat ids"})
    reservationId = fields.UUID(required=True)
    sessionSeatId = fields.UUID(required=True)
    sessionSeat = fields.Nested(SessionSeatSchema, required=True)


class ReservationCoreSchema(Schema):
    id = fields.UUID(required=True)
    userId = fields.UUID(required=True)
    sessionId = fields.UUID(required=True)
    status = fields.String(required=True, validate=validate.OneOf(RESERVATION_STATUSES))
    expiresAt = Timestamp()
    idempotencyKey = fields.String(required=True, allow_none=True)
    createdAt = Timestamp()
    updatedAt = Timestamp()
    seats = fields.List(fields.Nested(ReservedSeatSchema), required=True)
    reservationSeats = fields.List(fields.Nested(ReservationSeatSchema), required=True)
    seatLabels = fields.List(fields.String(), required=True, metadata={"description": "rowLabel + seatNumber"})
    session = fields.Nested(SessionSchema, required=True)


class ReservationSchema(ReservationCoreSchema):
    user = fields.Nested(UserSchema, required=True)


class HoldWarningSchema(Schema):
    code = fields.String(required=True, metadata={"description": "seats_stranded"})
    message = fields.String(required=True)
    sessionSeatIds = fields.List(fields.UUID(), required=True, metadata={"description": "the seats left alone"})


class HeldReservationSchema(ReservationSchema):
    warnings = fields.List(fields.Nested(HoldWarningSchema), metadata={
        "description": "only when the hold leaves single free seats alone (docs/beyond.md, the no-orphan rule)"})


class UserDetailSchema(UserSchema):
    reservations = fields.List(fields.Nested(ReservationCoreSchema), required=True,
                               metadata={"description": "the newest 100, any status"})


class SaleSchema(Schema):
    id = fields.UUID(required=True)
    reservationId = fields.UUID(required=True)
    userId = fields.UUID(required=True)
    sessionId = fields.UUID(required=True)
    movieTitle = fields.String(required=True)
    startShowTime = Timestamp()
    totalAmount = fields.Float(required=True)
    confirmedAt = Timestamp()
    createdAt = Timestamp()
    seats = fields.List(fields.Nested(ReservedSeatSchema), required=True)
    reservation = fields.Nested(ReservationCoreSchema, required=True)
    user = fields.Nested(UserSchema, required=True)


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
        "description": "the rate inlet: buyers admitted per second, cluster-wide"})
    capacity = fields.Integer(strict=True, validate=validate.Range(min=1, max=100_000), metadata={
        "description": "the capacity inlet: at most this many buyers inside at once, cluster-wide (the next goes in "
                       "as one buys, leaves or runs out of time)"})


class QueueStateSchema(Schema):
    sessionId = fields.UUID(required=True)
    enabled = fields.Boolean(required=True)
    inlet = fields.String(allow_none=True, validate=validate.OneOf(["rate", "capacity"]))
    rate = fields.Float(allow_none=True)
    capacity = fields.Integer(allow_none=True)
    auto = fields.Boolean(required=True, metadata={"description": "turned on by itself past the demand threshold"})


class QueuePlaceSchema(Schema):
    sessionId = fields.UUID(required=True)
    enabled = fields.Boolean(required=True, metadata={"description": "false: no waiting room, hold at once"})
    position = fields.Integer(allow_none=True, metadata={"description": "place in join order, from 1"})
    ahead = fields.Integer(required=True, metadata={"description": "buyers in line before this one"})
    estimatedWaitSeconds = fields.Integer(required=True)
    admitted = fields.Boolean(required=True)
    admission = fields.String(allow_none=True, metadata={"description": "send as X-Admission with holds"})
    admissionExpiresAt = fields.DateTime(allow_none=True, metadata={"description": TIMESTAMP})
