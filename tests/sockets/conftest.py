"""Fixtures of the seat-channel tests."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import make_session, make_user, seat_ids


@pytest.fixture
async def scene(client: TestClient) -> dict[str, Any]:
    session = await make_session(client)
    return {"session": session, "sid": session["id"], "seats": await seat_ids(client, session["id"]),
            "ana": await make_user(client, "Ana"), "bob": await make_user(client, "Bob")}
