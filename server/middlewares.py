"""Middlewares: request id + node id headers, and the one mapping of every error to the contract's body."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from core import ids
from core.appkeys import ADMISSION, INFLIGHT, NODE_ID, SETTINGS
from core.errors import DomainError
from core.metrics import HTTP_LATENCY, HTTP_REQUESTS
from server.logs import request_id_var
from storage.faults import service_fault

log = logging.getLogger("boxoffice.http")

# The seat picker's own text files; fonts and images are compressed formats already.
COMPRESSED_SUFFIXES = frozenset({".html", ".js", ".css", ".svg"})

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


@functools.lru_cache(maxsize=4096)  # bounded: methods x routes x statuses (the route is a pattern, not a path)
def _route_metrics(method: str, route: str, status: int) -> tuple[Any, Any]:
    """The metric children of one (method, route, status): `labels()` is a locked lookup on every call."""
    return HTTP_REQUESTS.labels(method, route, str(status)), HTTP_LATENCY.labels(route)


CORS_METHODS = "GET,HEAD,PUT,PATCH,POST,DELETE"
# what a front end on another origin may read besides the simple headers
CORS_EXPOSED = "X-Worker-ID, X-Node-Id, X-Request-Id, Retry-After"


def cors_origin(request: web.Request) -> str | None:
    """The Access-Control-Allow-Origin of a response: `*` unless ALLOWED_ORIGINS lists origins, then the
    request's Origin if listed (None: no CORS headers, the browser keeps the response from the page)."""
    allowed = request.app[SETTINGS].allowed_origins
    if not allowed or "*" in allowed:
        return "*"
    origin = request.headers.get("Origin", "").strip().rstrip("/")
    if origin and origin.lower() in {a.strip().rstrip("/").lower() for a in allowed}:
        return origin
    return None


def add_cors(request: web.Request, headers: Any) -> None:
    origin = cors_origin(request)
    if origin != "*":  # the answer depends on the Origin: caches must keep one per origin
        headers.add("Vary", "Origin")
    if origin is None:
        return
    headers["Access-Control-Allow-Origin"] = origin
    headers["Access-Control-Expose-Headers"] = CORS_EXPOSED


def preflight(request: web.Request) -> web.Response:
    """A CORS preflight: 204, the methods, and the request headers the browser asks to send (bearer tokens
    in `Authorization` among them). No credentials mode: cookies are not used."""
    response = web.Response(status=204)
    add_cors(request, response.headers)
    if "Access-Control-Allow-Origin" in response.headers:
        response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        asked = request.headers.get("Access-Control-Request-Headers", "")
        if asked:
            response.headers["Access-Control-Allow-Headers"] = asked[:1024]
        response.headers["Access-Control-Max-Age"] = "600"
    return response


def node_headers(headers: Any, node_id: str, rid: str) -> None:
    """The node's id under both names (`X-Worker-ID` is the StarSoft API's) and the request id."""
    headers["X-Node-Id"] = node_id
    headers["X-Worker-ID"] = node_id
    headers["X-Request-Id"] = rid


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
    response: web.StreamResponse
    gate = request.app[INFLIGHT]
    counted = False
    try:
        try:
            counted = gate.enter(request)  # first: a node beyond its bound refuses before any other work
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                response = preflight(request)
            else:
                for admit in request.app[ADMISSION]:
                    early = await admit(request)
                    if early is not None:
                        response = early
                        break
                else:
                    response = await handler(request)
            if isinstance(response, web.FileResponse):
                if not await _is_file(response):
                    # A static file that is missing: FileResponse would answer an empty 404 only when sent.
                    response = error_response(404, "not_found", "Not Found")
                elif Path(getattr(response, "_path", "")).suffix in COMPRESSED_SUFFIXES:
                    # gzip or deflate if the client accepts it: the page's text goes out at a quarter of its size;
                    # never for a range (it counts the file's own bytes), and caches keep the two apart
                    response.headers[hdrs.VARY] = hdrs.ACCEPT_ENCODING
                    if hdrs.RANGE not in request.headers:
                        response.enable_compression()
        except Exception as exc:  # noqa: BLE001 - `failure` maps every one (or raises it on: redirects)
            response = failure(request, exc)
        status = response.status
    except web.HTTPException as exc:  # a redirect (below 400) passes through
        status = exc.status
        node_headers(exc.headers, node_id, rid)
        raise
    finally:
        if counted:
            gate.leave()
        resource = request.match_info.route.resource
        count, latency = _route_metrics(request.method, resource.canonical if resource else "unmatched", status)
        count.inc()
        latency.observe(time.perf_counter() - started)
    if not response.prepared:
        node_headers(response.headers, node_id, rid)
        if "Access-Control-Allow-Origin" not in response.headers:
            add_cors(request, response.headers)
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
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into a clean 500
        fault = service_fault(exc)  # a backing service's state: 503 with Retry-After
        if fault is not None:
            return domain_error_response(fault)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Internal server error")
