"""What the launcher of local clusters shares: where the repository is, its error, and how it probes a process
that may be starting or dying."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# what a probe of a starting or dying process may raise (refused, reset, half a response)
PROBE_ERRORS = (OSError, http.client.HTTPException)


class ClusterError(RuntimeError):
    """A node or HAProxy could not start; the message says which and shows the end of its log."""


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def http_get(url: str, timeout: float = 1.0) -> tuple[int, Message, bytes]:
    """A plain GET that never raises for an HTTP status (only for a connection failure).

    The headers are looked up case-insensitively: HAProxy sends header names in lower case.
    """
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback URLs we built
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()
