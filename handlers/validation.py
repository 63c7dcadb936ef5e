"""Request validation: each handler's marshmallow schemas (declared with aiohttp-apigami's decorators, which
also feed the OpenAPI document) loaded straight from the request.

`admit` replaces aiohttp-apigami's `validation_middleware` (and settles the caller first),
which goes through webargs for every location: on the hold path that layer cost more than the schema
itself. The body, headers and path are read here and loaded by the schema directly, with webargs'
semantics (a missing body is `{}`, headers are matched case-insensitively by each field's data key,
unknown keys as the schema's Meta says); any other location (the query string, with its repeated keys)
still goes through the webargs parser.

Schemas made only of UUID fields and lists of UUIDs (the hold's body, the ids in paths) also get a fast
loader compiled from their fields (`fast_loader`): it takes only input it can load exactly as marshmallow
does -- the declared keys, ids as canonical 36-character strings, list lengths within the declared bounds --
and hands anything else (a wrong type, a missing or unknown key, a malformed id) to the schema, which loads
it or raises its usual errors. On the rush path the schema's load was 18% of the node's time (py-spy).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp_apigami.constants import APISPEC_PARSER, APISPEC_VALIDATED_DATA_NAME, SCHEMAS_ATTR
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, missing, validate
from webargs import core

from core.errors import ValidationFailed
from handlers.auth import check_caller
from handlers.parsing import field_errors


def _header_keys(schema: Schema) -> list[str]:
    keys: list[str] | None = getattr(schema, "_bx_header_keys", None)
    if keys is None:
        keys = [field.data_key or name for name, field in schema.fields.items()]
        schema._bx_header_keys = keys  # type: ignore[attr-defined]
    return keys


FastLoader = Callable[[Any], dict[str, Any] | None]
_UUID_TEXT = 36  # the canonical form: 8-4-4-4-12 hex digits


def _plain(field: fields.Field) -> bool:
    return (not field.validators and not field.allow_none and field.load_default is missing
            and not field.dump_only)


def _bounds(field: fields.Field) -> tuple[int, float] | None:
    """The list's length bounds, if its only validators are Length ones."""
    low, high = 0, float("inf")
    for validator in field.validators:
        if type(validator) is not validate.Length:
            return None
        if validator.equal is not None:
            low, high = max(low, validator.equal), min(high, validator.equal)
        else:
            low = max(low, validator.min or 0)
            high = min(high, float("inf") if validator.max is None else validator.max)
    return low, high


def _uuid(value: Any) -> uuid.UUID | None:
    if type(value) is not str or len(value) != _UUID_TEXT:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _nothing_given(data: Any) -> dict[str, Any] | None:
    return {} if isinstance(data, Mapping) and not data else None


def fast_loader(schema: Schema) -> FastLoader | None:
    """A loader equal to `schema.load` on the input it accepts (None: let the schema load it), or None if the
    schema has anything but plain UUID and list-of-UUID fields (optional fields of other kinds excepted: input
    with one of them goes to the schema), hooks, or unknown keys INCLUDEd.
    A schema whose fields are all optional, without defaults, loads nothing as nothing whatever else it has."""
    if any(schema._hooks.values()):
        return None
    if all(not f.required and f.load_default is missing for f in schema.load_fields.values()):
        return _nothing_given  # e.g. optional headers: nothing given loads as nothing
    if schema.unknown not in (RAISE, EXCLUDE):
        return None
    strict = schema.unknown == RAISE  # an unknown key: the schema's error (RAISE) or left out (EXCLUDE)
    plan: list[tuple[str, str, bool, tuple[int, float] | None]] = []  # key, attribute, required, list bounds
    slow: set[str] = set()  # optional fields of other kinds: a body that has one is the schema's to load
    for name, field in schema.load_fields.items():
        key = field.data_key or name
        if not field.required and field.load_default is missing and not (
                type(field) is fields.UUID or type(field) is fields.List and type(field.inner) is fields.UUID):
            slow.add(key)
        elif type(field) is fields.UUID and _plain(field):
            plan.append((key, field.attribute or name, field.required, None))
        elif (type(field) is fields.List and type(field.inner) is fields.UUID and _plain(field.inner)
              and not field.allow_none and field.load_default is missing and not field.dump_only
              and (bounds := _bounds(field)) is not None):
            plan.append((key, field.attribute or name, field.required, bounds))
        else:
            return None
    keys = frozenset(key for key, *_ in plan)

    def load_fast(data: Any) -> dict[str, Any] | None:
        if not isinstance(data, Mapping) or (strict and not keys.issuperset(data)) or any(k in data for k in slow):
            return None
        out: dict[str, Any] = {}
        for key, attribute, required, bounds in plan:
            if key not in data:
                if required:
                    return None
                continue
            value = data[key]
            if bounds is None:
                loaded = _uuid(value)
                if loaded is None:
                    return None
                out[attribute] = loaded
                continue
            if type(value) is not list or not bounds[0] <= len(value) <= bounds[1]:
                return None
            items = [_uuid(item) for item in value]
            if None in items:
                return None
            out[attribute] = items
        return out

    return load_fast


def _fast(schema: Schema) -> FastLoader | None:
    try:
        return schema._bx_fast  # type: ignore[attr-defined,no-any-return]
    except AttributeError:
        schema._bx_fast = fast_loader(schema)  # type: ignore[attr-defined]
        return schema._bx_fast  # type: ignore[attr-defined,no-any-return]


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
    fast = _fast(schema)
    if fast is not None and (loaded := fast(data)) is not None:
        return loaded
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(details={"fields": field_errors(exc.messages)}) from None


async def admit(request: web.Request) -> None:
    """Per route, before its handler: who is asking (`handlers.auth.check_caller`), then what they sent (the
    schemas, into `request["data"]`, `request["headers"]`, ...). An admission check (`ADMISSION`), called by
    the one middleware, not a layer of its own."""
    await check_caller(request)
    schemas = getattr(request.match_info.handler, SCHEMAS_ATTR, None)
    if schemas is None:
        return
    result: Any = None
    for entry in schemas:
        data = await load(request, entry.schema, entry.location)
        if entry.put_into:
            request[entry.put_into] = data
        elif result is None:
            result = data
    request[request.app[APISPEC_VALIDATED_DATA_NAME]] = {} if result is None else result
