"""Middlewares: request id + node id headers, and the one mapping of every error to the contract's body."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import asyncpg
import redis.exceptions
from aiohttp import web
from aiohttp.typedefs import Handler

from core import ids
from core.errors import DomainError
from core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from server.logs import request_id_var
from server.typedefs import ADMISSION, INFLIGHT, NODE_ID

log = logging.getLogger("boxoffice.http")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    431: "headers_too_large",
    503: "service_unavailable",
}


@functools.lru_cache(maxsize=128)
def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"statusCode": status, "error": _reason(status), "code": code, "message": message,
            "details": details or {}}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, code, message, details), status=status, headers=headers)


def domain_error_response(exc: DomainError) -> web.Response:
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def unavailable(service: str, exc: BaseException) -> DomainError:
    """A backing service failed: 503 with a stable code and a hint to retry soon."""
    err = DomainError(f"{service} is unavailable, retry shortly", code=f"{service}_unavailable",
                      headers={"Retry-After": "1"})
    err.status = 503
    log.warning("%s unavailable: %r", service, exc)
    return err


@functools.lru_cache(maxsize=4096)  # bounded: methods x routes x statuses (the route is a pattern, not a path)
def _route_metrics(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The metric children of one (method, route, status): `labels()` is a locked lookup on every call."""
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_LATENCY.labels(route)


@web.middleware
async def http_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one layer of every request: the request id (taken from X-Request-Id or made up) and node id
    headers, the request's metrics, the node's bound on requests in flight (`INFLIGHT`), the app's admission
    checks (`ADMISSION`: the rate limit, the route's token rule and schemas) and `failure`'s one mapping of
    every error to the contract's body.

    One layer, with the checks as plain calls, not a middleware each: every layer costs a call on every
    request, and its coroutine frame (with aiohttp's frame around it) stays alive for as long as each
    WebSocket is open."""
    started = time.perf_counter()
    rid = request.headers.get("X-Request-Id", "")[:64] or ids.request_id()
    request_id_var.set(rid)
    node_id = request.app[NODE_ID]
    status = 500
    gate = request.app[INFLIGHT]
    counted = False
    try:
        try:
            counted = gate.enter(request)  # first: a node beyond its bound refuses before any other work
            for admit in request.app[ADMISSION]:
                early = await admit(request)
                if early is not None:
                    response = early
                    break
            else:
                response = await handler(request)
            if isinstance(response, web.FileResponse) and not await _is_file(response):
                # A static file that is missing: FileResponse would answer an empty 404 only when sent.
                response = error_response(404, "not_found", "Not Found")
        except Exception as exc:  # noqa: BLE001 - `failure` maps every one (or raises it on: redirects)
            response = failure(request, exc)
        status = response.status
    except web.HTTPException as exc:  # a redirect (below 400) passes through
        status = exc.status
        exc.headers["X-Node-Id"] = node_id
        exc.headers["X-Request-Id"] = rid
        raise
    finally:
        if counted:
            gate.leave()
        resource = request.match_info.route.resource
        count, latency = _route_metrics(request.method, resource.canonical if resource else "unmatched", status)
        count.inc()
        latency.observe(time.perf_counter() - started)
    if not response.prepared:
        response.headers["X-Node-Id"] = node_id
        response.headers["X-Request-Id"] = rid
    return response


async def _is_file(response: web.FileResponse) -> bool:
    path = getattr(response, "_path", None)  # aiohttp keeps the path it will send here
    if path is None:
        return True
    return await asyncio.to_thread(Path(path).is_file)


def failure(request: web.Request, error: Exception) -> web.Response:
    """Every failure becomes `{statusCode, error, code, message, details}`; never a stack trace. A plain
    function, not a layer around the handler: a layer's coroutine frame would stay alive for as long as each
    WebSocket is open, and cost a call on every request."""
    try:
        raise error
    except DomainError as exc:
        return domain_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 413:
            message = "The request body is too large"
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return error_response(exc.status, code, message, headers=headers)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return domain_error_response(unavailable("redis", exc))
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError, OSError,
            asyncpg.exceptions.CannotConnectNowError) as exc:
        return domain_error_response(unavailable("database", exc))
    except Exception:  # noqa: BLE001 - the one place that turns a bug into a clean 500
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Internal server error")
