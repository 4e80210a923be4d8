"""Reading histories: pairing events into operations, and clear errors for malformed files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jepsen_like.checker.history import HistoryError, load_history, parse_history
from jepsen_like.checker.values import freeze, same, thaw


def ev(process: int, kind: str, f: str, value: Any, op_id: int, key: Any = None) -> dict[str, Any]:
    return {"process": process, "type": kind, "f": f, "key": key, "value": value, "id": op_id}


def doc(events: list[dict[str, Any]], model: str = "cas-register", **top: Any) -> dict[str, Any]:
    return {"format": 1, "name": "t", "model": model, "initial_value": None, "ops": events, **top}


GOOD = [
    ev(0, "invoke", "write", 1, 0),
    ev(1, "invoke", "read", None, 1),
    ev(0, "ok", "write", 1, 0),
    ev(1, "info", "read", None, 1),
]


def test_pairs_events_into_operations_in_invocation_order() -> None:
    history = parse_history(doc(GOOD))
    assert [(op.id, op.type, op.call, op.ret) for op in history.operations] == [
        (0, "ok", 0, 2),
        (1, "info", 1, 3),
    ]
    assert history.n_events == 4
    assert history.expected_linearizable is None


def test_unknown_keys_are_ignored() -> None:
    events = [dict(e, node="n1", latency_ns=5) for e in GOOD]
    history = parse_history(doc(events, notes="x", counts={}, whatever=[1, 2]))
    assert len(history.operations) == 2


def test_a_process_may_invoke_again_after_an_info() -> None:
    events = [
        ev(0, "invoke", "write", 1, 0),
        ev(0, "info", "write", 1, 0),
        ev(0, "invoke", "read", None, 1),
        ev(0, "ok", "read", 1, 1),
    ]
    assert len(parse_history(doc(events)).operations) == 2


def test_load_reports_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    path.write_text(json.dumps(doc(GOOD)))
    assert load_history(path).source == str(path)
    path.write_text("{not json")
    with pytest.raises(HistoryError, match=r"h\.json: not JSON"):
        load_history(path)
    with pytest.raises(HistoryError, match="cannot read"):
        load_history(tmp_path / "missing.json")


def test_big_integers_fall_back_to_the_standard_library(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    events = [ev(0, "invoke", "write", 2**70, 0), ev(0, "ok", "write", 2**70, 0)]
    path.write_text(json.dumps(doc(events)))
    assert load_history(path).operations[0].value == 2**70


MALFORMED: list[tuple[str, Any, str]] = [
    ("not an object", [], "a history is a JSON object"),
    ("no format", {"model": "kv", "ops": []}, 'missing "format"'),
    ("future format", doc([], format=2), "unsupported format 2"),
    ("unknown model", doc([], model="queue"), "unknown model 'queue'"),
    ("no ops", {"format": 1, "model": "kv"}, 'missing "ops"'),
    ("ops not a list", doc({}), '"ops" must be a list'),  # type: ignore[arg-type]
    ("bad expectation", doc([], expected_linearizable="yes"), "expected_linearizable"),
    (
        "unmatched invocation",
        doc([ev(0, "invoke", "write", 1, 0)]),
        r"1 invocation\(s\) never complete: 0 \(ops\[0\]\)",
    ),
    (
        "completion without invocation",
        doc([ev(0, "ok", "write", 1, 7)]),
        r"ops\[0\] \(id 7\): completion of operation 7, which was never invoked",
    ),
    (
        "two open operations",
        doc([ev(0, "invoke", "write", 1, 0), ev(0, "invoke", "read", None, 1)]),
        r"ops\[1\] \(id 1\): process 0 invokes operation 1 while its operation 0 \(ops\[0\]\) "
        + "is still open",
    ),
    (
        "id reused",
        doc([ev(0, "invoke", "write", 1, 0), ev(0, "ok", "write", 1, 0)] * 2),
        "operation id 0 is invoked twice",
    ),
    (
        "completed twice",
        doc(
            [ev(0, "invoke", "write", 1, 0), ev(0, "ok", "write", 1, 0), ev(0, "ok", "write", 1, 0)]
        ),
        "operation 0 completes twice",
    ),
    (
        "completed by another process",
        doc([ev(0, "invoke", "write", 1, 0), ev(1, "ok", "write", 1, 0)]),
        "invoked by process 0 but completed by process 1",
    ),
    (
        "completed as another function",
        doc([ev(0, "invoke", "write", 1, 0), ev(0, "ok", "read", 1, 0)]),
        "invoked as write but completes as read",
    ),
    (
        "ok write with another value",
        doc([ev(0, "invoke", "write", 1, 0), ev(0, "ok", "write", 2, 0)]),
        "the ok write completes with value 2 but was invoked with 1",
    ),
    (
        "bad type",
        doc([ev(0, "invoke", "write", 1, 0), ev(0, "done", "write", 1, 0)]),
        "\"type\" must be invoke, ok, fail or info, not 'done'",
    ),
    ("process not an int", doc([ev("a", "invoke", "write", 1, 0)]), '"process" must be an integer'),  # type: ignore[arg-type]
    ("process a bool", doc([ev(True, "invoke", "write", 1, 0)]), '"process" must be an integer'),
    ("no id", doc([{"process": 0, "type": "invoke", "f": "read"}]), r'ops\[0\]: "id" must be'),
    ("event not an object", doc([3]), "an event is an object"),  # type: ignore[list-item]
    (
        "append in a register",
        doc([ev(0, "invoke", "append", "x", 0)]),
        "f 'append' is not an operation of model cas-register",
    ),
    ("kv without key", doc([ev(0, "invoke", "read", None, 0)], model="kv"), 'needs a string "key"'),
    ("register with key", doc([ev(0, "invoke", "read", None, 0, key="k")]), '"key" must be null'),
    ("bad cas", doc([ev(0, "invoke", "cas", 1, 0)]), r"a cas value is \[expected, new\]"),
    (
        "bad append",
        doc([ev(0, "invoke", "append", 1, 0, key="k")], model="kv"),
        "an append value is a string",
    ),
    (
        "bad txn",
        doc([ev(0, "invoke", "txn", [["incr", "x", 1]], 0)], model="multi-register"),
        "a txn micro-op is",
    ),
    (
        "time backwards",
        doc(
            [dict(ev(0, "invoke", "write", 1, 0), time=5), dict(ev(0, "ok", "write", 1, 0), time=4)]
        ),
        "time 4 is before the previous event's 5",
    ),
]


@pytest.mark.parametrize(("case", "document", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_histories_are_refused_with_a_clear_message(
    case: str, document: Any, message: str
) -> None:
    with pytest.raises(HistoryError, match=message):
        parse_history(document)


def test_the_error_names_the_source() -> None:
    with pytest.raises(HistoryError, match=r"^runs/a\.json: unknown model"):
        parse_history(doc([], model="queue"), source="runs/a.json")


@pytest.mark.parametrize(
    "value", [None, 0, 1, 1.5, "s", True, False, [], [1, [2]], {"a": {"b": [True]}}]
)
def test_freeze_round_trips(value: Any) -> None:
    assert thaw(freeze(value)) == value
    hash(freeze(value))


def test_values_compare_as_json() -> None:
    assert not same(True, 1)
    assert not same(False, 0)
    assert not same([1, 2], [2, 1])
    assert not same([], {})
    assert same(1, 1.0)
    assert same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert not same("1", 1)
