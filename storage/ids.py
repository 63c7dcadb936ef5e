"""Random (version 4) UUIDs from a buffer of the OS's random bytes.

`uuid.uuid4()` makes one `os.urandom(16)` system call per id; a hold makes one id and every request one
request id, and on the rush path those calls were 6% of the node's time (py-spy). Here one call fills a
buffer for 256 ids: the same source (the kernel's CSPRNG), the same version and variant bits.
"""

from __future__ import annotations

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


def _forget() -> None:
    """A forked child must not hand out the ids its parent hands out."""
    global _offset  # noqa: PLW0603
    _offset = _CHUNK


os.register_at_fork(after_in_child=_forget)
