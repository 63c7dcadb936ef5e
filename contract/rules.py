"""Request rules REST and the socket share: what either door accepts, bounded the same way."""

from __future__ import annotations

import unicodedata

from marshmallow import ValidationError, fields, validate

# An idempotency key (REST `Idempotency-Key`/`x-idempotency-key`, socket `idempotencyKey`): 1 to 255
# characters, the bound the database's idempotency_keys table also enforces.
MAX_IDEMPOTENCY_KEY = 255


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


# Best available seats (REST `rows`, socket `rows`): at most this many row labels, each this long at most.
MAX_ROW_LABEL = 16
MAX_BEST_ROWS = 100
