"""The platform around the API: health, readiness, metrics, the OpenAPI description, headers and error bodies."""

from __future__ import annotations

import re
import zlib
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from core.settings import Settings
from server.app import create_app
from server.embedded import free_port
from tests.conftest import ADMIN

ERROR_KEYS = {"statusCode", "error", "code", "message", "details"}
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|\.py\", line")


def assert_error_body(body: Any, status: int, code: str) -> None:
    assert isinstance(body, dict), body
    assert ERROR_KEYS <= set(body), body
    assert body["statusCode"] == status and body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)


async def read(resp: Any) -> str:
    """The body as text, checked on the way for any trace of a stack."""
    text: str = await resp.text()
    assert not TRACEBACK.search(text), text
    return text


# ------------------------------------------------------------------ health and readiness

async def test_health(client: TestClient) -> None:
    resp = await client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    assert resp.headers["X-Node-Id"] == "test-node"


async def test_ready_when_all_three_answer(client: TestClient) -> None:
    resp = await client.get("/ready")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"status": "ok", "checks": {"kafka": "ok", "postgres": "ok", "redis": "ok"}}


@pytest.mark.parametrize("down", ["redis", "kafka"])
async def test_ready_is_503_naming_the_service_that_is_down(
        aiohttp_client: Any, base_settings: Settings, down: str) -> None:
    closed = free_port()  # nothing listens there
    broken = (replace(base_settings, redis_url=f"redis://127.0.0.1:{closed}/0") if down == "redis"
              else replace(base_settings, kafka_bootstrap_servers=f"127.0.0.1:{closed}"))
    client = await aiohttp_client(create_app(broken))

    resp = await client.get("/ready")

    assert resp.status == 503
    body = await resp.json()
    assert_error_body(body, 503, "not_ready")
    assert body["failed"] == [down] and body["details"]["failed"] == [down]
    assert body["checks"][down].startswith("unavailable")
    assert {name: state for name, state in body["checks"].items() if name != down} == \
        {name: "ok" for name in ("kafka", "postgres", "redis") if name != down}
    assert down in body["message"]
    assert resp.headers["X-Node-Id"] == "test-node"
    # liveness does not depend on the services
    assert (await client.get("/health")).status == 200


# ------------------------------------------------------------------ metrics

def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, 0 if absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_are_prometheus_text_and_count_requests(client: TestClient) -> None:
    before = await (await client.get("/metrics", headers=ADMIN)).text()
    for _ in range(3):
        assert (await client.get("/health")).status == 200
    assert (await client.get("/rooms/not-a-uuid")).status == 400

    resp = await client.get("/metrics", headers=ADMIN)

    assert resp.status == 200
    assert resp.content_type == "text/plain"
    text = await read(resp)
    assert "# TYPE boxoffice_http_requests_total counter" in text
    assert "# TYPE boxoffice_http_request_seconds histogram" in text
    def counted(**labels: str) -> float:
        name = "boxoffice_http_requests_total"
        return sample(text, name, **labels) - sample(before, name, **labels)

    assert counted(method="GET", route="/health", status="200") == 3
    assert counted(method="GET", route="/rooms/{id}", status="400") == 1


# ------------------------------------------------------------------ OpenAPI

# Every route of CONTRACT.md's REST table that exists now: (method, path, success status).
CONTRACT_ROUTES = [
    ("post", "/users", "201"),
    ("get", "/users/{id}", "200"),
    ("get", "/users/{id}/purchases", "200"),
    ("post", "/rooms", "201"),
    ("get", "/rooms", "200"),
    ("get", "/rooms/{id}", "200"),
    ("post", "/sessions", "201"),
    ("get", "/sessions", "200"),
    ("get", "/sessions/{id}", "200"),
    ("get", "/sessions/{id}/seats", "200"),
    ("post", "/reservations", "201"),
    ("get", "/reservations/{id}", "200"),
    ("post", "/reservations/{id}/confirm", "201"),
    ("delete", "/reservations/{id}", "204"),
    ("get", "/sales/{id}", "200"),
    ("get", "/sales/user/{userId}", "200"),
    ("get", "/users", "200"),
    ("get", "/reservations", "200"),
    ("get", "/sales", "200"),
    ("get", "/health", "200"),
    ("get", "/ready", "200"),
    ("get", "/metrics", "200"),
]
REQUEST_BODIES = {("post", "/users"): "UserCreate", ("post", "/rooms"): "RoomCreate",
                  ("post", "/sessions"): "SessionCreate", ("post", "/reservations"): "ReservationCreate"}
NO_JSON_BODY = {("delete", "/reservations/{id}"), ("get", "/metrics")}  # 204, and Prometheus text


@pytest.fixture
async def spec(client: TestClient) -> dict[str, Any]:
    resp = await client.get("/api-docs/swagger.json")
    assert resp.status == 200
    assert resp.headers["X-Node-Id"] == "test-node"
    return await resp.json()  # type: ignore[no-any-return]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    if schema.get("type") == "array":
        schema = schema["items"]
    if "$ref" in schema:
        return spec["definitions"][schema["$ref"].rsplit("/", 1)[1]]  # type: ignore[no-any-return]
    return schema


@pytest.mark.parametrize(("method", "path", "success"), CONTRACT_ROUTES,
                         ids=[f"{method} {path}" for method, path, _ in CONTRACT_ROUTES])
async def test_swagger_describes_every_contract_route(spec: dict[str, Any], method: str, path: str,
                                                      success: str) -> None:
    operation = spec["paths"][path][method]
    assert operation.get("summary")
    assert success in operation["responses"]
    if (method, path) not in NO_JSON_BODY:
        described = resolve(spec, operation["responses"][success]["schema"])
        assert described.get("properties"), described  # the response body's fields are described
    for name in re.findall(r"{(\w+)}", path):
        params = [p for p in operation["parameters"] if p["in"] == "path" and p["name"] == name]
        assert params and params[0]["required"] is True and params[0].get("format") == "uuid"
    if (method, path) in REQUEST_BODIES:
        bodies = [p for p in operation["parameters"] if p["in"] == "body"]
        assert len(bodies) == 1
        assert bodies[0]["schema"]["$ref"] == f"#/definitions/{REQUEST_BODIES[method, path]}"
        assert resolve(spec, bodies[0]["schema"])["properties"]
    if method == "post":  # every write documents its error body
        errors = [r for code, r in operation["responses"].items() if code.startswith("4")]
        assert errors and all(r["schema"]["$ref"] == "#/definitions/Error" for r in errors)


async def test_swagger_describes_request_and_error_details(spec: dict[str, Any]) -> None:
    users = spec["paths"]["/users"]["post"]
    assert [p for p in users["parameters"] if p["in"] == "body"][0]["required"] is True
    assert users["responses"]["409"]["description"] == "email_taken"
    user_create = spec["definitions"]["UserCreate"]
    assert set(user_create["required"]) == {"name", "email"}
    assert user_create["properties"]["name"]["maxLength"] == 200
    room_create = spec["definitions"]["RoomCreate"]
    assert room_create["properties"]["capacity"]["maximum"] == 5000
    assert set(spec["definitions"]["Error"]["required"]) == ERROR_KEYS
    seat_map = spec["paths"]["/sessions/{id}/seats"]["get"]
    status = [p for p in seat_map["parameters"] if p["name"] == "status"][0]
    assert status["in"] == "query" and status["enum"] == ["AVAILABLE", "RESERVED", "SOLD"]
    sessions = spec["paths"]["/sessions"]["post"]
    assert "room_too_small" in sessions["responses"]["422"]["description"]
    assert spec["paths"]["/ready"]["get"]["responses"]["503"]["schema"]["$ref"] == "#/definitions/NotReady"
    assert spec["paths"]["/metrics"]["get"]["produces"] == ["text/plain", "application/json"]


async def test_api_docs_page_is_swagger_ui(client: TestClient) -> None:
    resp = await client.get("/api-docs")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    page = await resp.text()
    assert "swagger-ui" in page and "/api-docs/swagger.json" in page
    assert resp.headers["X-Node-Id"] == "test-node"
    asset = await client.get("/api-docs/static/swagger-ui-bundle.js")
    assert asset.status == 200


async def test_page_text_is_sent_compressed(client: TestClient) -> None:
    """The page, its scripts and styles go out compressed (deflate or gzip, as the browser accepts), as they are
    otherwise; fonts (compressed already) are sent as they are."""
    for path in ("/", "/static/js/picker.js", "/static/app.css"):
        plain = await client.get(path, headers={"Accept-Encoding": "identity"}, auto_decompress=False)
        body = await plain.read()
        assert plain.status == 200 and "Content-Encoding" not in plain.headers, path
        packed = await client.get(path, headers={"Accept-Encoding": "gzip, deflate, br"}, auto_decompress=False)
        assert packed.status == 200 and packed.headers["Content-Encoding"] in {"deflate", "gzip"}, path
        raw = await packed.read()
        assert zlib.decompress(raw, zlib.MAX_WBITS | 32) == body and len(raw) < len(body) / 2, (path, len(raw))
    font = await client.get("/static/fonts/inter-latin-wght-normal.woff2", headers={"Accept-Encoding": "gzip"},
                            auto_decompress=False)
    assert font.status == 200 and "Content-Encoding" not in font.headers
    await font.read()


# ------------------------------------------------------------------ headers and error bodies

async def test_every_response_carries_the_node_id(client: TestClient) -> None:
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/health", {}), ("GET", "/", {}), ("GET", "/metrics", {"headers": ADMIN}),
        ("GET", "/no/such/route", {}),
        ("PATCH", "/users", {}), ("POST", "/users", {"data": b"{"}), ("GET", "/rooms/bad", {}),
        ("POST", "/rooms", {"json": {"name": "x", "capacity": 20}}),  # 401 without a token
        ("POST", "/users", {"data": b"x" * (65 * 1024)}), ("HEAD", "/health", {}),
    ]
    for method, path, kwargs in requests:
        resp = await client.request(method, path, **kwargs)
        await read(resp)
        assert resp.headers.get("X-Node-Id") == "test-node", (method, path, resp.status)
        assert resp.headers.get("X-Request-Id"), (method, path)


async def test_request_id_is_echoed(client: TestClient) -> None:
    resp = await client.get("/health", headers={"X-Request-Id": "abc-123"})
    assert resp.headers["X-Request-Id"] == "abc-123"


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), [
    ("GET", "/no/such/route", {}, 404, "not_found"),
    ("GET", "/static/missing.js", {}, 404, "not_found"),
    ("DELETE", "/users", {}, 405, "method_not_allowed"),
    ("PUT", "/health", {}, 405, "method_not_allowed"),
    ("POST", "/users", {"data": b"x" * (64 * 1024 + 1)}, 413, "payload_too_large"),
    ("POST", "/users", {"data": b'{"name": "Ana", "email": '}, 400, "malformed_json"),
    ("POST", "/users", {"data": b"[" * 5000 + b"]" * 5000}, 400, "malformed_json"),
    ("POST", "/users", {"data": b'{"name": NaN, "email": "a@b.co"}'}, 400, "malformed_json"),
    ("POST", "/users", {"data": b'{"name": "\xff\xfe", "email": "a@b.co"}'}, 400, "malformed_json"),
], ids=["404", "404-static", "405", "405-health", "413", "malformed-json", "deeply-nested-json", "nan", "bad-utf8"])
async def test_error_bodies_of_aiohttp_and_the_parser(client: TestClient, method: str, path: str,
                                                      kwargs: dict[str, Any], status: int, code: str) -> None:
    resp = await client.request(method, path, **kwargs)
    assert resp.status == status
    assert resp.content_type == "application/json"
    await read(resp)
    assert_error_body(await resp.json(), status, code)
    assert resp.headers["X-Node-Id"] == "test-node"
    if status == 405:
        assert resp.headers["Allow"]


async def test_an_unexpected_bug_is_a_clean_500_without_a_traceback(
        aiohttp_client: Any, base_settings: Settings) -> None:
    async def buggy(request: web.Request) -> web.Response:
        raise ZeroDivisionError("a bug, not the client's fault")

    app = create_app(base_settings)
    app.router.add_get("/__test/buggy", buggy)
    client = await aiohttp_client(app)

    resp = await client.get("/__test/buggy")

    assert resp.status == 500
    text = await read(resp)
    assert "ZeroDivisionError" not in text and "a bug" not in text
    assert_error_body(await resp.json(), 500, "internal_error")
    assert resp.headers["X-Node-Id"] == "test-node"


async def test_a_validation_error_names_each_bad_field(client: TestClient) -> None:
    resp = await client.post("/rooms", json={"name": "", "rows": "ten", "seatsPerRow": 5, "colour": "red"},
                             headers=ADMIN)
    assert resp.status == 400
    body = await resp.json()
    assert_error_body(body, 400, "validation_error")
    assert set(body["details"]["fields"]) == {"name", "rows", "colour"}


def test_event_loop_setting_picks_uvloop_or_asyncio_and_refuses_anything_else(capsys: Any) -> None:
    import asyncio

    import uvloop

    from server.cli import new_event_loop

    assert Settings.from_env(env={}).event_loop == "uvloop"
    for kind, expected in (("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)):
        loop = new_event_loop(kind)
        try:
            assert isinstance(loop, expected)
            assert loop.run_until_complete(asyncio.sleep(0, result="ran")) == "ran"
        finally:
            loop.close()
    with pytest.raises(SystemExit) as exit_info:
        new_event_loop("trio")
    assert exit_info.value.code == 2
    assert "EVENT_LOOP must be uvloop or asyncio" in capsys.readouterr().err
