"""Operational routes: liveness, readiness of the three backing services, Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from aiohttp_apigami import docs, response_schema
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.aio import owned_task, within
from core.appkeys import PG_POOL, READINESS, READY_CHECKS, REDIS
from core.metrics import REGISTRY
from handlers import schemas as s
from handlers.auth import admin_only

CHECK_TIMEOUT = 1.0
# seconds between two rounds of readiness checks: HAProxy checks every second, so it sees a change within ~1.5 s
REFRESH_INTERVAL = 0.5
log = logging.getLogger("boxoffice.ready")


@docs(tags=["ops"], summary="Liveness: 200 while the process runs")
@response_schema(s.HealthSchema, 200)
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class Readiness:
    """The readiness checks, run by a background task every `interval` seconds; `/ready` answers from the latest
    round. A probe then costs no round trip of its own, and a node busy with a rush answers it as fast as its
    loop turns, where checks run per probe would queue behind the rush's own queries and time out."""

    def __init__(self, app: web.Application, interval: float = REFRESH_INTERVAL) -> None:
        self.app = app
        self.interval = interval
        self.results: dict[str, str] = {}
        self.fresh = asyncio.Event()  # set once the first round is done

    def checks(self) -> dict[str, Callable[[], Awaitable[object]]]:
        app = self.app
        checks: dict[str, Callable[[], Awaitable[object]]] = {
            "postgres": lambda: app[PG_POOL].fetchval("SELECT 1"),
            "redis": lambda: app[REDIS].ping(),
        }
        registered: dict[str, Callable[[], Awaitable[object]]] = app[READY_CHECKS]  # Kafka registers there
        checks.update(registered)
        return checks

    async def check_once(self) -> None:
        results: dict[str, str] = {}

        async def run(name: str, check: Callable[[], Awaitable[object]]) -> None:
            try:
                await within(CHECK_TIMEOUT, check())
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready; the log says why, the answer does not
                if self.results.get(name) != "unavailable":  # once per outage, not every round
                    log.warning("readiness: %s is unavailable: %r", name, exc)
                results[name] = "unavailable"

        await asyncio.gather(*(run(n, c) for n, c in self.checks().items()))
        self.results = dict(sorted(results.items()))
        self.fresh.set()

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)

    async def latest(self) -> dict[str, str]:
        """The latest round's results (waiting, bounded, for the first round right after start)."""
        if not self.fresh.is_set():
            try:
                await within(CHECK_TIMEOUT + 1.0, self.fresh.wait())
            except TimeoutError:
                return {name: "unavailable" for name in sorted(self.checks())}
        return self.results


@docs(tags=["ops"], summary="Readiness: 200 when PostgreSQL, Redis and Kafka answer, else 503 naming the failed ones",
      responses={503: {"schema": s.NotReadySchema, "description": "not_ready: `failed` lists the services down"}})
@response_schema(s.ReadySchema, 200)
async def ready(request: web.Request) -> web.Response:
    checks_sorted = await request.app[READINESS].latest()
    failed = [n for n, v in checks_sorted.items() if v != "ok"]
    if not failed:
        return web.json_response({"status": "ok", "checks": checks_sorted})
    # The contract's error body (a 503 is an error like any other) plus the fields probes read.
    return web.json_response({
        "statusCode": 503, "error": "Service Unavailable", "code": "not_ready",
        "message": "Not ready: " + ", ".join(f"{name} is unavailable" for name in failed),
        "details": {"failed": failed, "checks": checks_sorted},
        "status": "unavailable", "failed": failed, "checks": checks_sorted,
    }, status=503, headers={"Retry-After": "1"})


@docs(tags=["ops"], summary="Prometheus metrics (text exposition format; admin token)",
      produces=["text/plain", "application/json"],  # the metrics, or a JSON error (401, 403)
      responses={200: {"description": "Prometheus text format", "schema": {"type": "string"}},
                 401: {"schema": s.ErrorSchema, "description": "unauthorized, invalid_token"},
                 403: {"schema": s.ErrorSchema, "description": "admin_required"}},
      security=[{"bearer": []}])
@admin_only
async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readiness_ctx(app: web.Application) -> AsyncIterator[None]:
    """The readiness checks' background task, owned by the app: started with it, cancelled and awaited at exit."""
    readiness = app[READINESS] = Readiness(app)
    async with owned_task(readiness.run(), "readiness-checks"):
        yield


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
