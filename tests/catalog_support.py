"""What the catalog tests share: a session's body and the check of an error answer's shape."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def future(hours: float = 24) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def session_body(room_id: str, **changes: Any) -> dict[str, Any]:
    body = {"movieTitle": "Dune", "startShowTime": future(24), "endShowTime": future(27), "roomId": room_id,
            "ticketPrice": 12.5}
    body.update(changes)
    return body


async def error_of(resp: Any, status: int) -> dict[str, Any]:
    text = await resp.text()
    assert resp.status == status, text
    body: dict[str, Any] = await resp.json()
    assert {"statusCode", "error", "code", "message", "details"} <= set(body)
    assert body["statusCode"] == status
    return body
