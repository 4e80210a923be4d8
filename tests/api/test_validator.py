"""The schema validator on its own: pure, no sockets."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api import schemas
from api.validation import (
    SchemaError,
    Validator,
    _check_numbers,
    coerce_parameter,
    parse_json,
)
from raftmem.errors import ValidationError

V = Validator(schemas.COMPONENTS)


def field_of(schema: dict[str, Any], value: Any) -> str | None:
    with pytest.raises(ValidationError) as caught:
        V.validate(schema, value)
    assert caught.value.status == 400 and caught.value.definite is True
    field: str | None = caught.value.details["field"]
    return field


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        ({"type": "integer"}, [0, -3, 2**70, 4.0], [True, 1.5, "1", None, math.nan]),
        ({"type": "number"}, [0, 1.5, -2], [False, "1", None, [1]]),
        ({"type": "boolean"}, [True, False], [0, 1, "true", None]),
        ({"type": "string"}, ["", "x"], [1, None, b"x"]),
        ({"type": "null"}, [None], [0, "", False]),
        ({"type": ["integer", "null"]}, [None, 3], ["3", 1.2]),
        ({"type": "array"}, [[], [1]], [{}, "[]"]),
        ({"type": "object"}, [{}, {"a": 1}], [[], "{}"]),
        ({"enum": ["a", 1]}, ["a", 1], [True, 1.0, "b"]),
        ({"minimum": 1, "maximum": 3}, [1, 3, 2.5, "x"], [0, 3.1]),
        ({"exclusiveMinimum": 0, "exclusiveMaximum": 1}, [0.5], [0, 1]),
        ({"minLength": 2, "maxLength": 3}, ["ab", "abc", 5], ["a", "abcd"]),
        ({"pattern": "^[a-z]+$"}, ["abc"], ["abc\n", "ab1", ""]),
        ({"minItems": 1, "maxItems": 2}, [[1], [1, 2]], [[], [1, 2, 3]]),
        ({"items": {"type": "string"}}, [[], ["a"]], [[1], ["a", None]]),
        ({"minProperties": 1}, [{"a": 1}], [{}]),
        ({"x-maxUtf8Bytes": 4}, ["abcd", "éé"], ["abcde", "ééé"]),
        ({"x-maxJsonBytes": 9}, [{"a": 1}], [{"a": "long"}]),
        ({"x-maxDepth": 2}, [{"a": [1]}, 5], [{"a": [[1]]}]),
        ({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, [{"a": 1}, {"b": 1}], [{}]),
    ],
)
def test_keywords(schema: dict[str, Any], good: list[Any], bad: list[Any]) -> None:
    V.check_schema(schema)
    for value in good:
        V.validate(schema, value)
    for value in bad:
        with pytest.raises(ValidationError):
            V.validate(schema, value)


def test_integral_float_becomes_int_and_defaults_are_filled_with_copies() -> None:
    schema = {"type": "object", "properties": {
        "n": {"type": "integer"},
        "f": {**schemas.ref("SearchFilter"), "default": {}},
        "k": {"type": "integer", "default": 10},
    }}
    first = V.validate(schema, {"n": 5.0})
    assert first == {"n": 5, "f": {}, "k": 10} and type(first["n"]) is int
    first["f"]["x"] = 1
    assert V.validate(schema, {})["f"] == {}


def test_field_paths_name_the_offender() -> None:
    batch = schemas.ref("BatchRequest")
    good = {"agent_id": "a", "text": "t", "embedding": [1.0]}
    assert field_of(batch, {"memories": [good, {**good, "tags": ["x", 3]}]}) == (
        "memories[1].tags[1]")
    assert field_of(batch, {"memories": [good, {**good, "zz": 1}]}) == "memories[1].zz"
    assert field_of(batch, {"memories": [good, {"text": "t", "embedding": [1]}]}) == (
        "memories[1].agent_id")
    assert field_of(batch, []) is None


def test_the_input_is_not_changed() -> None:
    value = {"embedding": [1, 2], "k": 3.0}
    V.validate(schemas.ref("SearchRequest"), value)
    assert value == {"embedding": [1, 2], "k": 3.0}


def test_deep_nesting_is_refused_without_recursion_errors() -> None:
    value: Any = 1
    for _ in range(5000):
        value = [value]
    with pytest.raises(ValidationError, match="cannot be stored"):
        V.validate(schemas.ref("Metadata"), {"a": value})
    assert field_of({"x-maxDepth": 10}, value) is None


@pytest.mark.parametrize(
    "schema",
    [
        {"format": "email"},
        {"oneOf": []},
        {"type": "float"},
        {"$ref": "#/components/schemas/Nope"},
        {"$ref": "http://example.com/x"},
        {"$ref": "#/components/schemas/Tag", "maxLength": 3},
        {"properties": {"a": {"uniqueItems": True}}},
        {"additionalProperties": 3},
        {"pattern": "("},
    ],
)
def test_unsupported_schemas_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        V.check_schema(schema)


@pytest.mark.parametrize(
    ("schema", "raw", "expected"),
    [
        ({"type": "integer"}, "42", 42),
        ({"type": "integer"}, "-7", -7),
        ({"type": "boolean"}, "true", True),
        ({"type": "boolean"}, "false", False),
        ({"type": "number"}, "1.5", 1.5),
        ({"type": "string"}, "x y", "x y"),
    ],
)
def test_parameters_are_coerced(schema: dict[str, Any], raw: str, expected: Any) -> None:
    assert coerce_parameter(schema, raw, "p", V) == expected


@pytest.mark.parametrize(
    ("schema", "raw"),
    [
        ({"type": "integer"}, "4.0"),
        ({"type": "integer"}, " 4"),
        ({"type": "integer"}, "0x10"),
        ({"type": "integer"}, "1" * 20),
        ({"type": "boolean"}, "True"),
        ({"type": "boolean"}, "1"),
        ({"type": "number"}, "nan"),
        ({"type": "number"}, "inf"),
        ({"type": "number"}, "abc"),
    ],
)
def test_bad_parameters_are_refused(schema: dict[str, Any], raw: str) -> None:
    with pytest.raises(ValidationError):
        coerce_parameter(schema, raw, "p", V)


@pytest.mark.parametrize(
    "text", ["", " ", "{", "NaN", "[Infinity]", "[-Infinity]", "1e400", '"\\ud800"', "{}{}"]
)
def test_parse_json_refuses(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_json(text.encode())


# --------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)

REQUEST_SCHEMAS = [
    "PutMemoryRequest", "BatchRequest", "PatchMemoryRequest", "DeleteMemoryRequest",
    "SearchRequest", "NamespaceDefinition",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REQUEST_SCHEMAS), json_values)
def test_any_json_value_is_accepted_or_refused_cleanly(name: str, value: Any) -> None:
    try:
        V.validate(schemas.ref(name), value)
    except ValidationError as exc:
        assert exc.status == 400 and exc.code == "invalid_request"


embedding_items = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=2),
    st.sampled_from([3.4e38, 3.5e38, -3.5e38, schemas.FLOAT32_MAX, -schemas.FLOAT32_MAX]),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(embedding_items, max_size=6))
def test_the_embedding_fast_path_agrees_with_the_general_one(value: list[Any]) -> None:
    item_schema = schemas.EMBEDDING["items"]

    def verdict(check: Any) -> tuple[bool, str | None]:
        try:
            check()
        except ValidationError as exc:
            return False, exc.details["field"]
        return True, None

    fast = verdict(lambda: _check_numbers(item_schema, value, "embedding"))
    slow = verdict(lambda: [V.validate(item_schema, x, f"embedding[{i}]")
                            for i, x in enumerate(value)])
    assert fast == slow
