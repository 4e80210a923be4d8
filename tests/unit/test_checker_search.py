"""The checker on literal histories: verdicts, violation reports, partitions, the time limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jepsen_like.checker.check import check_history, partitions
from jepsen_like.checker.history import load_history, parse_history
from jepsen_like.checker.models import register_input, register_model
from jepsen_like.checker.search import search

HISTORIES = Path(__file__).parent / "histories"
FILES = sorted(HISTORIES.rglob("*.json"))


def ev(process: int, kind: str, f: str, value: Any, op_id: int, key: Any = None) -> dict[str, Any]:
    return {"process": process, "type": kind, "f": f, "key": key, "value": value, "id": op_id}


def doc(events: list[dict[str, Any]], model: str = "cas-register", initial: Any = 0) -> Any:
    return {"format": 1, "name": "t", "model": model, "initial_value": initial, "ops": events}


def test_the_literal_histories_cover_both_verdicts_and_all_models() -> None:
    histories = [load_history(p) for p in FILES]
    assert {h.expected_linearizable for h in histories} == {True, False}
    assert {h.model for h in histories} == {"cas-register", "kv", "multi-register"}


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_literal_history_verdict(path: Path) -> None:
    history = load_history(path)
    result = check_history(history, timeout=10)
    assert result.linearizable == history.expected_linearizable, history.notes
    if result.linearizable is False:
        v = result.violation
        assert v is not None
        assert v.op in v.window
        ids = {op.id for op in history.operations}
        assert set(v.window) <= ids and set(v.prefix) <= ids


def check(name: str) -> Any:
    return check_history(load_history(HISTORIES / f"{name}.json"))


def test_violation_names_the_key_and_window() -> None:
    result = check("kv-violation-on-one-key")
    assert result.violation is not None
    assert result.violation.key == "b"
    assert result.failing_keys == ["b"]
    assert result.violation.op == 4  # the stale read
    assert result.violation.window == [4]
    assert result.violation.prefix == [1]  # b's write
    assert result.violation.state == "1"
    assert result.partitions == 3
    assert result.to_json()["key"] == "b"


def test_violation_window_holds_the_concurrent_ops() -> None:
    result = check("register-new-then-old")
    v = result.violation
    assert v is not None
    assert (v.op, v.window, v.prefix, v.state) == (2, [0, 2], [0, 1], 1)
    both = check("cas-both-succeed").violation
    assert both is not None and both.window == [0, 1]


def test_json_shape() -> None:
    doc_ = check("cas-both-succeed").to_json()
    assert doc_["linearizable"] is False
    assert {"name", "model", "seconds", "key", "window", "op", "prefix", "state"} <= set(doc_)
    ok = check("cas-chain").to_json()
    assert ok["linearizable"] is True and ok["key"] is None and ok["window"] == []


def test_empty_and_info_only_histories_are_linearizable() -> None:
    assert check_history(parse_history(doc([]))).linearizable is True
    info_only = [ev(0, "invoke", "write", 1, 0), ev(0, "info", "write", 1, 0)]
    assert check_history(parse_history(doc(info_only))).linearizable is True


def test_kv_partitions_are_per_key_with_their_start_values() -> None:
    events = [
        ev(0, "invoke", "read", None, 0, "a"),
        ev(0, "ok", "read", "1", 0, "a"),
        ev(0, "invoke", "write", "2", 1, "b"),
        ev(0, "fail", "write", "2", 1, "b"),
        ev(0, "invoke", "read", None, 2, "c"),
        ev(0, "info", "read", None, 2, "c"),
    ]
    parts = partitions(parse_history(doc(events, model="kv", initial={"a": "1"})))
    # The failed write and the indeterminate read take no part: only key a is left.
    assert [(p.key, p.model.init, [op.id for op in p.ops]) for p in parts] == [("a", "1", [0])]


def test_multi_register_partitions_join_keys_a_txn_touches() -> None:
    def txn(op_id: int, *keys: str) -> list[dict[str, Any]]:
        mops = [["write", k, op_id] for k in keys]
        return [ev(0, "invoke", "txn", mops, op_id), ev(0, "ok", "txn", mops, op_id)]

    events = txn(0, "x", "y") + txn(1, "z") + txn(2, "y", "w") + txn(3, "v")
    parts = partitions(parse_history(doc(events, model="multi-register", initial={"x": 0})))
    assert sorted(p.key for p in parts) == [("v",), ("w", "x", "y"), ("z",)]  # type: ignore[type-var]


def adversarial(writes: int) -> dict[str, Any]:
    """`writes` concurrent writes of distinct values, then a read of a value nobody wrote.

    Every subset of the writes is a distinct cached configuration, so refuting it
    takes about writes * 2^writes steps.
    """
    events = [ev(p, "invoke", "write", p, p) for p in range(writes)]
    events += [ev(p, "ok", "write", p, p) for p in range(writes)]
    events += [ev(writes, "invoke", "read", None, writes), ev(writes, "ok", "read", -1, writes)]
    return doc(events)


def test_a_tiny_adversarial_history_is_refuted() -> None:
    assert check_history(parse_history(adversarial(4))).linearizable is False


def test_the_time_limit_yields_unknown() -> None:
    result = check_history(parse_history(adversarial(40)), timeout=0.2)
    assert result.linearizable == "unknown"
    assert result.violation is None
    assert "time limit" in result.reason
    assert result.to_json()["linearizable"] == "unknown"


def test_a_violation_found_before_the_time_limit_still_counts() -> None:
    slow = adversarial(40)["ops"]
    for e in slow:
        e["key"] = "slow"
    stale = [
        ev(100, "invoke", "write", 1, 100, "bad"),
        ev(100, "ok", "write", 1, 100, "bad"),
        ev(100, "invoke", "read", None, 101, "bad"),
        ev(100, "ok", "read", 0, 101, "bad"),
    ]
    result = check_history(parse_history(doc(stale + slow, model="kv")), timeout=0.2)
    assert result.linearizable is False
    assert result.violation is not None and result.violation.key == "bad"
    assert "slow" in result.reason


def test_search_directly() -> None:
    # write 1 [0, 3], read -> 1 [1, 2]: the read is inside the write's window.
    model = register_model(0)
    inputs = [(1, 1), (0, 1)]
    assert search(model, inputs, calls=[0, 1], rets=[3, 2]).linearizable is True
    # The read completes before the write is invoked: it cannot see it.
    found = search(model, inputs, calls=[2, 0], rets=[3, 1])
    assert found.linearizable is False
    assert found.stuck == 1 and found.prefix == [] and found.state == 0


def test_register_model_inputs() -> None:
    events = [ev(0, "invoke", "cas", [True, [1]], 0), ev(0, "ok", "cas", [True, [1]], 0)]
    op = parse_history(doc(events)).operations[0]
    model = register_model(True)
    ok, state = model.step(model.init, register_input(op))
    assert ok
    assert not model.step(register_model(1).init, register_input(op))[0]  # 1 is not true
    assert not model.observes(register_input(op))
    assert state != 1
