"""Operational routes: liveness, readiness of the three backing services, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp_apigami import docs, response_schema
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from handlers import schemas as s
from storage.appkeys import PG_POOL, READY_CHECKS, REDIS
from storage.metrics import REGISTRY

CHECK_TIMEOUT = 1.0


@docs(tags=["ops"], summary="Liveness: 200 while the process runs")
@response_schema(s.HealthSchema, 200)
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@docs(tags=["ops"], summary="Readiness: 200 when PostgreSQL, Redis and Kafka answer, else 503")
@response_schema(s.ReadySchema, 200)
async def ready(request: web.Request) -> web.Response:
    app = request.app
    checks: dict[str, Callable[[], Awaitable[object]]] = {
        "postgres": lambda: app[PG_POOL].fetchval("SELECT 1"),
        "redis": lambda: app[REDIS].ping(),
        **app.get(READY_CHECKS, {}),
    }
    results: dict[str, str] = {}

    async def run(name: str, check: Callable[[], Awaitable[object]]) -> None:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
            results[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            results[name] = f"unavailable: {type(exc).__name__}"

    await asyncio.gather(*(run(n, c) for n, c in checks.items()))
    ok = all(v == "ok" for v in results.values())
    failed = sorted(n for n, v in results.items() if v != "ok")
    body = {"status": "ok" if ok else "unavailable", "checks": results}
    if not ok:
        body["failed"] = failed  # type: ignore[assignment]
    return web.json_response(body, status=200 if ok else 503)


@docs(tags=["ops"], summary="Prometheus metrics (text format)")
async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(REGISTRY))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
