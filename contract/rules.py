"""Request rules REST and the socket share: what either door accepts, bounded the same way."""

from __future__ import annotations

# An idempotency key (REST `Idempotency-Key`/`x-idempotency-key`, socket `idempotencyKey`): 1 to 255
# characters, the bound the database's idempotency_keys table also enforces.
MAX_IDEMPOTENCY_KEY = 255

# Best available seats (REST `rows`, socket `rows`): at most this many row labels, each this long at most.
MAX_ROW_LABEL = 16
MAX_BEST_ROWS = 100
