"""A small validator for the subset of JSON Schema that :mod:`api.schemas` uses.

Pure: no I/O, no clock. Every failure is a :class:`raftmem.errors.ValidationError`
(400, ``invalid_request``, definite) whose ``field`` names the offending value
as a path such as ``memories[3].embedding[7]`` (``None`` for the body itself).

Supported keywords (anything else in a schema is refused by :meth:`Validator.check_schema`,
so a schema can never promise a check that is silently skipped):

    type, enum, required, properties, additionalProperties, minProperties,
    minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength, maxLength,
    pattern, minItems, maxItems, items, anyOf, $ref (to #/components/schemas/),
    x-maxUtf8Bytes, x-maxJsonBytes, x-maxDepth

Deviations from JSON Schema, on purpose:

* ``pattern`` is searched as in ECMA 262, but a trailing ``$`` matches only at
  the very end (Python's ``$`` would also accept a trailing newline).
* ``default`` is applied: a missing property whose schema has a default is
  filled in, so the documented default is the one the handlers see.
* An integral float (``3.0``) is a valid ``integer`` and is returned as ``int``.
* ``anyOf`` only asserts; it never changes the returned value.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from raftmem.errors import ValidationError

Schema = Mapping[str, Any]

CONSTRAINTS = frozenset(
    {
        "type", "enum", "required", "properties", "additionalProperties", "minProperties",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "minLength", "maxLength", "pattern", "minItems", "maxItems", "items", "anyOf",
        "$ref", "x-maxUtf8Bytes", "x-maxJsonBytes", "x-maxDepth",
    }
)
ANNOTATIONS = frozenset({"description", "default", "title", "examples"})
TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
REF_PREFIX = "#/components/schemas/"

_MAX_LISTED = 10


class SchemaError(Exception):
    """A schema uses something this validator does not implement (a programming error)."""


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = _short(key)
    return key if not path else f"{path}.{key}"


def invalid(path: str, problem: str) -> ValidationError:
    where = path or "body"
    return ValidationError(f"{where}: {problem}", field=path or None)


def listing(names: list[str]) -> str:
    shown = ", ".join(_short(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" (+{more} more)" if more > 0 else "")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _depth(value: Any) -> int:
    """Nesting depth without recursion (the input may be nested 1,000 deep)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((v, depth + 1) for v in item)
    return deepest


class Validator:
    """Validates and normalises JSON values against schemas that may ``$ref`` ``components``."""

    def __init__(self, components: Mapping[str, Schema]) -> None:
        self._components = components
        for name, schema in components.items():
            self.check_schema(schema, f"{REF_PREFIX}{name}")

    # ------------------------------------------------------------------ schema checks

    def check_schema(self, schema: Schema, where: str = "schema") -> None:
        """Raise :class:`SchemaError` unless every keyword in ``schema`` is implemented here."""
        unknown = set(schema) - CONSTRAINTS - ANNOTATIONS
        if unknown:
            raise SchemaError(f"{where}: unsupported keywords {sorted(unknown)}")
        if "$ref" in schema:
            self.resolve(schema)
            if set(schema) & CONSTRAINTS != {"$ref"}:
                raise SchemaError(f"{where}: $ref may only have annotations beside it")
        types = schema.get("type")
        if types is not None:
            names = [types] if isinstance(types, str) else list(types)
            if not names or set(names) - TYPES:
                raise SchemaError(f"{where}: bad type {types!r}")
        if "pattern" in schema:
            try:
                _compile(schema["pattern"])
            except re.error as exc:
                raise SchemaError(f"{where}: bad pattern: {exc}") from None
        for key, sub in schema.get("properties", {}).items():
            self.check_schema(sub, f"{where}.properties.{key}")
        additional = schema.get("additionalProperties", True)
        if isinstance(additional, Mapping):
            self.check_schema(additional, f"{where}.additionalProperties")
        elif not isinstance(additional, bool):
            raise SchemaError(f"{where}: additionalProperties must be a bool or a schema")
        if "items" in schema:
            self.check_schema(schema["items"], f"{where}.items")
        for i, sub in enumerate(schema.get("anyOf", ())):
            self.check_schema(sub, f"{where}.anyOf[{i}]")

    def resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            target = schema["$ref"]
            if not isinstance(target, str) or not target.startswith(REF_PREFIX):
                raise SchemaError(f"unsupported $ref {target!r}")
            name = target[len(REF_PREFIX):]
            if name not in self._components:
                raise SchemaError(f"unknown $ref {target!r}")
            schema = self._components[name]
        return schema

    # ------------------------------------------------------------------ validation

    def validate(self, schema: Schema, value: Any, path: str = "") -> Any:
        """Return ``value`` normalised (defaults filled, integral floats as int), or raise."""
        schema = self.resolve(schema)
        types = schema.get("type")
        if types is not None:
            value = self._check_type(types, value, path)
        if "enum" in schema and not any(
            type(value) is type(option) and value == option for option in schema["enum"]
        ):
            allowed = ", ".join(repr(option) for option in schema["enum"])
            raise invalid(path, f"must be one of {allowed}")
        if isinstance(value, str):
            self._check_string(schema, value, path)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._check_number(schema, value, path)
        elif isinstance(value, list):
            value = self._check_array(schema, value, path)
        elif isinstance(value, dict):
            value = self._check_object(schema, value, path)
        if "anyOf" in schema:
            self._check_any_of(schema["anyOf"], value, path)
        if "x-maxJsonBytes" in schema:
            self._check_json_size(schema["x-maxJsonBytes"], value, path)
        if "x-maxDepth" in schema and _depth(value) > schema["x-maxDepth"]:
            raise invalid(path, f"is nested deeper than {schema['x-maxDepth']} levels")
        return value

    def _check_type(self, types: str | list[str], value: Any, path: str) -> Any:
        names = [types] if isinstance(types, str) else types
        for name in names:
            if name == "integer" and isinstance(value, float) and value.is_integer():
                return int(value)
            if _is_type(name, value):
                return value
        raise invalid(path, f"expected {' or '.join(names)}, got {_type_name(value)}")

    def _check_string(self, schema: Schema, value: str, path: str) -> None:
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise invalid(path, f"is longer than {schema['maxLength']} characters")
        if "minLength" in schema and len(value) < schema["minLength"]:
            if not value:
                raise invalid(path, "must not be empty")
            raise invalid(path, f"is shorter than {schema['minLength']} characters")
        if "x-maxUtf8Bytes" in schema and len(value.encode("utf-8", "surrogatepass")) > schema[
            "x-maxUtf8Bytes"
        ]:
            raise invalid(path, f"is longer than {schema['x-maxUtf8Bytes']} bytes of UTF-8")
        if "pattern" in schema and not _compile(schema["pattern"]).search(value):
            raise invalid(path, f"does not match {schema['pattern']}")

    def _check_number(self, schema: Schema, value: float, path: str) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid(path, "must be a finite number")
        if "minimum" in schema and value < schema["minimum"]:
            raise invalid(path, f"must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise invalid(path, f"must be <= {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise invalid(path, f"must be > {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            raise invalid(path, f"must be < {schema['exclusiveMaximum']}")

    def _check_array(self, schema: Schema, value: list[Any], path: str) -> list[Any]:
        # Sizes first: a 10,000-element array is refused before any element is looked at.
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise invalid(path, f"has more than {schema['maxItems']} items ({len(value)})")
        if "minItems" in schema and len(value) < schema["minItems"]:
            if not value:
                raise invalid(path, "must not be empty")
            raise invalid(path, f"has fewer than {schema['minItems']} items")
        if "items" not in schema:
            return value
        items = self.resolve(schema["items"])
        if _is_plain_number_schema(items):
            return _check_numbers(items, value, path)
        return [self.validate(items, item, join(path, i)) for i, item in enumerate(value)]

    def _check_object(self, schema: Schema, value: dict[str, Any], path: str) -> dict[str, Any]:
        properties: Mapping[str, Schema] = schema.get("properties", {})
        additional = schema.get("additionalProperties", True)
        if additional is False:
            unknown = [key for key in value if key not in properties]
            if unknown:
                noun = "field" if len(unknown) == 1 else "fields"
                error = invalid(path, f"unknown {noun}: {listing(unknown)}")
                error.details["field"] = join(path, unknown[0])
                raise error
        missing = [key for key in schema.get("required", ()) if key not in value]
        if missing:
            noun = "field" if len(missing) == 1 else "fields"
            error = invalid(path, f"missing required {noun}: {listing(missing)}")
            error.details["field"] = join(path, missing[0])
            raise error
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            raise invalid(path, f"must have at least {schema['minProperties']} fields")
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in properties:
                out[key] = self.validate(properties[key], item, join(path, key))
            elif isinstance(additional, Mapping):
                out[key] = self.validate(additional, item, join(path, key))
            else:
                out[key] = item
        for key, sub in properties.items():
            if key in out:
                continue
            resolved = self.resolve(sub)
            if "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            elif "default" in resolved:
                out[key] = copy.deepcopy(resolved["default"])
        return out

    def _check_any_of(self, options: list[Schema], value: Any, path: str) -> None:
        for option in options:
            try:
                self.validate(option, value, path)
            except ValidationError:
                continue
            return
        if all(set(option) == {"required"} for option in options):
            names = [name for option in options for name in option["required"]]
            raise invalid(path, f"must contain at least one of: {', '.join(names)}")
        raise invalid(path, "matches none of the allowed forms")

    def _check_json_size(self, limit: int, value: Any, path: str) -> None:
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError as exc:
            raise invalid(path, f"cannot be stored: {exc}") from None
        if size > limit:
            raise invalid(path, f"is larger than {limit} bytes as JSON ({size})")


def _is_type(name: str, value: Any) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name == "boolean":
        return isinstance(value, bool)
    return value is None


_NUMBER_BOUNDS = {"type", "minimum", "maximum"} | ANNOTATIONS


def _is_plain_number_schema(schema: Schema) -> bool:
    return schema.get("type") == "number" and set(schema) <= _NUMBER_BOUNDS


def _check_numbers(schema: Schema, value: list[Any], path: str) -> list[Any]:
    """The hot path for embeddings (up to 1,000 x 4,096 numbers in a batch).

    Same verdicts as ``Validator.validate`` on each element, without a call per
    element (a test holds the two paths to the same answers).
    """
    low = schema.get("minimum", -math.inf)
    high = schema.get("maximum", math.inf)
    for i, item in enumerate(value):
        kind = type(item)
        if kind is not float and kind is not int:
            raise invalid(join(path, i), f"expected number, got {_type_name(item)}")
        if kind is float and not math.isfinite(item):
            raise invalid(join(path, i), "must be a finite number")
        if item < low:
            raise invalid(join(path, i), f"must be >= {low}")
        if item > high:
            raise invalid(join(path, i), f"must be <= {high}")
    return value


def coerce_parameter(schema: Schema, raw: str, path: str, validator: Validator) -> Any:
    """Turn a query/header/path string into the schema's type, then validate it."""
    resolved = validator.resolve(schema)
    kind = resolved.get("type")
    value: Any = raw
    if kind == "integer":
        if not re.fullmatch(r"-?[0-9]{1,19}", raw):
            raise invalid(path, "expected an integer")
        value = int(raw)
    elif kind == "number":
        try:
            value = float(raw)
        except ValueError:
            raise invalid(path, "expected a number") from None
    elif kind == "boolean":
        if raw not in ("true", "false"):
            raise invalid(path, "expected true or false")
        value = raw == "true"
    return validator.validate(schema, value, path)


def parse_json(raw: bytes) -> Any:
    """Parse a request body. orjson refuses NaN, Infinity and numbers that overflow to inf."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        hint = ""
        if b"NaN" in raw or b"Infinity" in raw:
            hint = " (NaN and Infinity are not JSON numbers)"
        raise invalid("", f"malformed JSON: {exc}{hint}") from None
