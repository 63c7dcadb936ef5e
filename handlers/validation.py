"""Request validation: each handler's marshmallow schemas (declared with aiohttp-apigami's decorators, which
also feed the OpenAPI document) loaded straight from the request.

It replaces aiohttp-apigami's `validation_middleware`, which goes through webargs for every location: on
the hold path that layer cost more than the schema itself. The body, headers and path are read here and
loaded by the schema directly, with webargs' semantics (a missing body is `{}`, headers are matched
case-insensitively by each field's data key, unknown keys as the schema's Meta says); any other location
(the query string, with its repeated keys) still goes through the webargs parser.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_apigami.constants import APISPEC_PARSER, APISPEC_VALIDATED_DATA_NAME, SCHEMAS_ATTR
from marshmallow import Schema, ValidationError
from webargs import core

from handlers.parsing import field_errors
from storage.errors import ValidationFailed


def _header_keys(schema: Schema) -> list[str]:
    keys: list[str] | None = getattr(schema, "_bx_header_keys", None)
    if keys is None:
        keys = [field.data_key or name for name, field in schema.fields.items()]
        schema._bx_header_keys = keys  # type: ignore[attr-defined]
    return keys


async def load(request: web.Request, schema: Schema, location: str) -> Any:
    """The schema's load of one request location, or a 400 `validation_error` naming the fields."""
    if location == "json":
        data = await request.app[APISPEC_PARSER].load_json(request, schema)
        if data is core.missing:
            data = {}
    elif location == "headers":
        headers = request.headers
        data = {key: headers[key] for key in _header_keys(schema) if key in headers}
    elif location == "match_info":
        data = request.match_info
    else:
        return await request.app[APISPEC_PARSER].parse(schema, request, location=location, unknown=None)
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(details={"fields": field_errors(exc.messages)}) from None


@web.middleware
async def validation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    schemas = getattr(request.match_info.handler, SCHEMAS_ATTR, None)
    if schemas is None:
        return await handler(request)
    result: Any = None
    for entry in schemas:
        data = await load(request, entry.schema, entry.location)
        if entry.put_into:
            request[entry.put_into] = data
        elif result is None:
            result = data
    request[request.app[APISPEC_VALIDATED_DATA_NAME]] = {} if result is None else result
    return await handler(request)
