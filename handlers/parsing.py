"""Request parsing: the webargs parser behind aiohttp-apigami, turned to the contract's errors."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from aiohttp import web
from marshmallow import Schema, ValidationError
from webargs import core
from webargs.aiohttpparser import AIOHTTPParser

from core.errors import ValidationFailed


class MalformedJson(ValidationFailed):
    code, message = "malformed_json", "The request body is not valid JSON"


def field_errors(messages: Any) -> dict[str, Any]:
    """Flatten webargs' {location: {field: [...]}} into {field: [...]}."""
    if isinstance(messages, dict) and set(messages) <= {"json", "querystring", "match_info", "headers", "query"}:
        flat: dict[str, Any] = {}
        for inner in messages.values():
            if isinstance(inner, dict):
                flat.update(inner)
            else:
                flat["_schema"] = inner
        return flat
    if isinstance(messages, dict):
        return messages
    return {"_schema": messages}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(raw: bytes) -> Any:
    """Strict JSON (no NaN/Infinity); anything unparseable is a 400 `malformed_json`, never a 500."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise MalformedJson(details={"body": [str(exc)[:200]]}) from None
    except RecursionError:  # "[[[[...]]]]" nested deeper than the parser's stack
        raise MalformedJson("The request body is nested too deeply", details={"body": ["nested too deeply"]}) from None


class ContractParser(AIOHTTPParser):  # type: ignore[misc]
    """Reads JSON whatever the Content-Type says, and raises domain errors instead of HTTP ones."""

    async def load_json(self, req: web.Request, schema: Schema) -> Any:
        if not req.body_exists:
            return core.missing
        raw = await req.read()  # bounded by the app's client_max_size (413 beyond)
        if not raw.strip():
            return core.missing
        return parse_json_body(raw)

    def handle_error(self, error: ValidationError, req: web.Request, schema: Schema, *,
                     error_status_code: int | None, error_headers: Any) -> NoReturn:
        raise ValidationFailed(details={"fields": field_errors(error.messages)})

