"""The StarSoft API's list routes (one's own, or all with the admin token; paged) and its headers (X-Worker-ID,
CORS)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from core.settings import Settings
from server.app import create_app
from tests.conftest import with_settings
from tests.seed_compat.support import Caller, make_show

# ------------------------------------------------------------------ the list routes: who sees what, paging

async def test_list_routes_with_tokens_show_ones_own_and_the_admin_all(aiohttp_client: Any, settings: Settings) -> None:
    caller = Caller(await aiohttp_client(create_app(settings)), tokens=True)
    _, session = await make_show(caller)
    seats = [s["id"] for s in (await caller.call("GET", f"/sessions/{session['id']}/seats", 200))["seats"]]
    ana, bob = await caller.create_user("Ana"), await caller.create_user("Bob")
    held = await caller.call("POST", "/reservations", 201, as_user=ana["id"],
                             body={"sessionId": session["id"], "sessionSeatIds": seats[:1]})
    bought = await caller.call("POST", "/reservations", 201, as_user=bob["id"],
                               body={"sessionId": session["id"], "sessionSeatIds": seats[1:2]})
    sale = await caller.call("POST", f"/reservations/{bought['id']}/confirm", 201, as_user=bob["id"])

    assert [r["id"] for r in await caller.call("GET", "/reservations", 200, as_user=ana["id"])] == [held["id"]]
    assert [r["id"] for r in await caller.call("GET", "/reservations", 200, as_user=bob["id"])] == [bought["id"]]
    everyone = await caller.call("GET", f"/reservations?sessionId={session['id']}", 200, admin=True)
    assert {r["id"] for r in everyone} == {held["id"], bought["id"]}
    confirmed = await caller.call("GET", f"/reservations?sessionId={session['id']}&status=CONFIRMED", 200, admin=True)
    assert [r["id"] for r in confirmed] == [bought["id"]]
    assert await caller.call("GET", f"/reservations?status=CONFIRMED&sessionId={session['id']}", 200,
                             as_user=ana["id"]) == []

    assert await caller.call("GET", "/sales", 200, as_user=ana["id"]) == []
    assert [s["id"] for s in await caller.call("GET", "/sales", 200, as_user=bob["id"])] == [sale["id"]]
    assert sale["id"] in {s["id"] for s in await caller.call("GET", "/sales?limit=500", 200, admin=True)}

    # GET /users: the admin only
    assert (await caller.call("GET", "/users", 403, as_user=ana["id"]))["code"] == "admin_required"
    assert (await caller.call("GET", "/users", 401))["code"] == "unauthorized"
    for path in ("/reservations", "/sales"):
        assert (await caller.call("GET", path, 401))["code"] == "unauthorized"


@pytest.mark.parametrize("path", ["/users", "/reservations", "/sales", "/rooms", "/sessions"])
async def test_list_routes_page_with_limit_and_offset(client: TestClient, path: str) -> None:
    caller = Caller(client, tokens=True)
    for bad in ("limit=0", "limit=501", "offset=-1", "limit=x", "status=LOST"):
        if bad.startswith("status") and path != "/reservations":
            continue
        body = await caller.call("GET", f"{path}?{bad}", 400, admin=True)
        assert body["code"] == "validation_error", bad
    if path == "/reservations":  # a bad filter is refused, not ignored
        assert (await caller.call("GET", f"{path}?sessionId=nope", 400, admin=True))["code"] == "validation_error"
    # two of everything, so the page below is full whatever ran before
    _, session = await make_show(caller)
    seats = [s["id"] for s in (await caller.call("GET", f"/sessions/{session['id']}/seats", 200))["seats"]]
    for seat in seats[:2]:
        buyer = await caller.create_user("Pager")
        held = await caller.call("POST", "/reservations", 201, as_user=buyer["id"],
                                 body={"userId": buyer["id"], "sessionId": session["id"], "sessionSeatIds": [seat]})
        await caller.call("POST", f"/reservations/{held['id']}/confirm", 201, as_user=buyer["id"])
    first = await caller.call("GET", f"{path}?limit=2", 200, admin=True)
    assert len(first) == 2
    second = await caller.call("GET", f"{path}?limit=1&offset=1", 200, admin=True)
    assert [x["id"] for x in second] == [first[1]["id"]]


# ------------------------------------------------------------------ headers: X-Worker-ID and CORS

async def test_every_response_carries_x_worker_id(client: TestClient) -> None:
    for method, path in (("GET", "/health"), ("GET", "/nope"), ("POST", "/users"), ("GET", "/"),
                         ("GET", f"/sessions/{uuid.uuid4()}"), ("GET", "/api-docs-json")):
        resp = await client.request(method, path, data=b"{" if method == "POST" else None)
        assert resp.headers.get("X-Worker-ID") == "test-node", (method, path, resp.status)
        assert resp.headers["X-Node-Id"] == "test-node"


async def test_cors_lets_a_front_end_on_another_origin_call_with_a_bearer_token(client: TestClient) -> None:
    origin = {"Origin": "http://front.example:5173"}
    preflight = await client.options("/reservations", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-idempotency-key"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert set(preflight.headers["Access-Control-Allow-Methods"].split(",")) >= {"GET", "POST", "DELETE"}
    allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed >= {"authorization", "content-type", "x-idempotency-key"}
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    assert preflight.headers["X-Worker-ID"] == "test-node"

    resp = await client.get("/sessions", headers=origin)
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Worker-ID" in resp.headers.get("Access-Control-Expose-Headers", "")
    error = await client.get("/users", headers=origin)  # an error is readable cross-origin too
    assert error.status == 401 and error.headers["Access-Control-Allow-Origin"] == "*"


async def test_allowed_origins_limits_cors_to_the_listed_origins(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(with_settings(settings, allowed_origins=("https://shop.example",))))
    ok = await client.options("/sessions", headers={"Origin": "https://shop.example",
                                                    "Access-Control-Request-Method": "GET"})
    assert ok.status == 204 and ok.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Origin" in ok.headers.get("Vary", "")
    other = await client.options("/sessions", headers={"Origin": "https://evil.example",
                                                       "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in other.headers
    plain = await client.get("/sessions", headers={"Origin": "https://evil.example"})
    assert plain.status == 200 and "Access-Control-Allow-Origin" not in plain.headers
    assert "Origin" in plain.headers.get("Vary", "")
