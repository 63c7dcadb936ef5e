"""The fast loaders compiled from marshmallow schemas (handlers.validation.fast_loader): on every input
they accept they must load exactly what the schema loads, and they must accept the ordinary requests."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields

from handlers import schemas as s
from handlers.validation import fast_loader

ids = st.uuids().map(str)
odd_ids = st.one_of(
    st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: u.hex), st.uuids().map(lambda u: f"{{{u}}}"),
    st.uuids().map(lambda u: f"urn:uuid:{u}"), st.text(max_size=40), st.integers(), st.none(),
    st.just("zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"), st.just(" " + str(uuid.uuid4())[1:]))
any_id = st.one_of(ids, ids, odd_ids)
keys = st.sampled_from(["sessionId", "sessionSeatIds", "userId", "id", "extra"])
values = st.one_of(any_id, st.lists(any_id, max_size=s.MAX_SEAT_IDS + 2), st.dictionaries(st.text(max_size=3), ids))
bodies = st.one_of(
    st.fixed_dictionaries({"sessionId": any_id, "sessionSeatIds": st.lists(any_id, max_size=s.MAX_SEAT_IDS + 2)},
                          optional={"userId": any_id}),
    st.fixed_dictionaries({"sessionId": ids, "sessionSeatIds": st.lists(ids, min_size=s.MAX_SEAT_IDS - 1,
                                                                         max_size=s.MAX_SEAT_IDS + 1)}),
    st.dictionaries(keys, values, max_size=4), st.lists(ids, max_size=2), st.text(max_size=5), st.none())


def same_as_schema(schema: Schema, data: Any) -> dict[str, Any] | None:
    fast = fast_loader(schema)
    assert fast is not None
    loaded = fast(data)
    if loaded is not None:  # taken: it must be exactly the schema's load, and the schema must accept it
        assert loaded == schema.load(data)
    return loaded


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_the_hold_body_loads_as_the_schema_loads_it(body: Any) -> None:
    same_as_schema(s.ReservationCreateSchema(), body)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, any_id, max_size=3))
def test_path_ids_load_as_the_schema_loads_them(match_info: dict[str, Any]) -> None:
    same_as_schema(s.IdPathSchema(), match_info)


@given(st.fixed_dictionaries({"sessionId": ids, "sessionSeatIds": st.lists(ids, min_size=1, max_size=s.MAX_SEAT_IDS)},
                             optional={"userId": ids}))
def test_ordinary_holds_take_the_fast_path(body: dict[str, Any]) -> None:
    loaded = same_as_schema(s.ReservationCreateSchema(), body)
    assert loaded is not None and loaded["sessionSeatIds"] == [uuid.UUID(i) for i in body["sessionSeatIds"]]


def test_what_the_fast_path_leaves_gets_the_schemas_errors() -> None:
    schema = s.ReservationCreateSchema()
    fast = fast_loader(schema)
    assert fast is not None
    for body in ({"sessionId": "nope", "sessionSeatIds": []}, {"sessionSeatIds": []},
                 {"sessionId": str(uuid.uuid4()), "sessionSeatIds": [], "price": 1},
                 {"sessionId": str(uuid.uuid4()), "sessionSeatIds": [str(uuid.uuid4())] * (s.MAX_SEAT_IDS + 1)}):
        assert fast(body) is None
        try:
            schema.load(body)
        except ValidationError:
            continue
        raise AssertionError(f"the schema accepted {body}")


def test_optional_headers_given_none_load_as_nothing_and_other_schemas_get_no_fast_path() -> None:
    headers = fast_loader(s.IdempotencyHeaderSchema())
    assert headers is not None and headers({}) == {} == s.IdempotencyHeaderSchema().load({})
    assert headers({"Idempotency-Key": "k"}) is None  # a key given: the schema validates it

    class Named(Schema):
        name = fields.String(required=True)
        id = fields.UUID(required=True)

    assert fast_loader(Named()) is None
