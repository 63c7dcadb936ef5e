"""Random (version 4) UUIDs from a buffer of the OS's random bytes.

`uuid.uuid4()` makes one `os.urandom(16)` system call per id; a hold made one id and every request one
request id, and on the rush path those calls were 6% of the node's time (py-spy). Here one call fills a
buffer for 256 ids: the same source (the kernel's CSPRNG), the same version and variant bits. Request ids
need no randomness each: a random prefix per process and a counter (`request_id`).
"""

from __future__ import annotations

import itertools
import os
import uuid

_CHUNK = 16 * 256
_buffer = b""
_offset = _CHUNK


def uuid4() -> uuid.UUID:
    global _buffer, _offset  # noqa: PLW0603 - one buffer per process, refilled in place
    if _offset >= _CHUNK:
        _buffer, _offset = os.urandom(_CHUNK), 0
    start, _offset = _offset, _offset + 16
    return uuid.UUID(bytes=_buffer[start:start + 16], version=4)


_REQUEST_IDS = itertools.count()
_request_prefix = uuid4().hex[:16]


def request_id() -> str:
    """A request id for a request that brought none: 32 hex digits like a UUID's, unique to this process (a
    random prefix per process, then a counter) without a random draw per request."""
    return f"{_request_prefix}{next(_REQUEST_IDS):016x}"


def _forget() -> None:
    """A forked child must not hand out the ids its parent hands out."""
    global _offset, _request_prefix  # noqa: PLW0603
    _offset = _CHUNK
    _request_prefix = uuid4().hex[:16]


os.register_at_fork(after_in_child=_forget)
