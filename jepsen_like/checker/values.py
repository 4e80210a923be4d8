"""JSON values as hashable, comparable model values.

Model states must be hashable (the search caches them) and must compare as JSON
does, not as Python does: Python says ``True == 1`` and cannot hash a list.
`freeze` maps a decoded JSON value to an equal-iff-JSON-equal hashable value,
and `thaw` maps it back for reports.

Decisions:
* booleans are distinct from numbers (``true`` is not ``1``);
* numbers compare numerically, so ``1`` and ``1.0`` are the same value (JSON
  does not distinguish them; a store may write either);
* objects compare regardless of key order.

Strings, integers, floats and null are their own frozen form, so the common case
costs nothing. Composite values become tagged tuples; no JSON value decodes to a
tuple, so a tag can never collide with data.
"""

from __future__ import annotations

from typing import Any

_LIST = "\x00list"
_DICT = "\x00dict"
_BOOL = "\x00bool"


def freeze(value: Any) -> Any:
    t = type(value)
    if t is str or t is int or t is float or value is None:
        return value
    if t is bool:
        return (_BOOL, value)
    if t is list:
        return (_LIST, *(freeze(v) for v in value))
    if t is dict:
        return (_DICT, *sorted((k, freeze(v)) for k, v in value.items()))
    raise TypeError(f"not a JSON value: {value!r}")


def thaw(value: Any) -> Any:
    if type(value) is not tuple:
        return value
    tag = value[0]
    if tag == _BOOL:
        return value[1]
    if tag == _LIST:
        return [thaw(v) for v in value[1:]]
    return {k: thaw(v) for k, v in value[1:]}


def same(a: Any, b: Any) -> bool:
    """Whether two decoded JSON values are the same value (see the module's decisions)."""
    return bool(freeze(a) == freeze(b))
