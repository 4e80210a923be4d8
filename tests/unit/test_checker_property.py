"""The checker against a brute-force checker on thousands of small random histories.

The brute force shares no code with the checker: it pairs the events itself,
has its own register, and tries every order of the operations that respects
real time, with every subset of the indeterminate (info) operations, depth
first. With at most 6 operations that is at most 6! orders.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jepsen_like.checker.check import check_history
from jepsen_like.checker.generate import generate_history
from jepsen_like.checker.history import parse_history

HISTORIES = Path(__file__).parent / "histories"


def _eq(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def brute_force(history: dict[str, Any]) -> bool:
    """Linearizable iff some order of a subset of the ops is legal and respects real time,
    where the subset holds every ok op and any info op (fail ops and info reads excluded)."""
    invoked: dict[int, tuple[int, dict[str, Any]]] = {}
    ops: list[dict[str, Any]] = []
    for pos, e in enumerate(history["ops"]):
        if e["type"] == "invoke":
            invoked[e["id"]] = (pos, e)
            continue
        call, inv = invoked[e["id"]]
        if e["type"] == "fail" or (e["type"] == "info" and e["f"] == "read"):
            continue
        ops.append(
            {
                "f": e["f"],
                "key": e["key"],
                "arg": inv["value"],
                "seen": e["value"],
                "ok": e["type"] == "ok",
                "call": call,
                "ret": pos,
            }
        )
    initial = history["initial_value"]

    def start(key: Any) -> Any:
        if history["model"] == "kv" and isinstance(initial, dict):
            return initial.get(key)
        return initial

    def apply(state: dict[Any, Any], op: dict[str, Any]) -> dict[Any, Any] | None:
        cur = state[op["key"]] if op["key"] in state else start(op["key"])
        if op["f"] == "read":
            return state if _eq(cur, op["seen"]) else None
        if op["f"] == "write":
            new = op["arg"]
        elif op["f"] == "cas":
            if not _eq(cur, op["arg"][0]):
                return None
            new = op["arg"][1]
        elif cur is None:
            new = op["arg"]
        elif isinstance(cur, str):
            new = cur + op["arg"]
        else:
            return None
        return {**state, op["key"]: new}

    # before[i]: the ok ops that completed before op i was invoked.
    before = [[j for j, p in enumerate(ops) if p["ok"] and p["ret"] < o["call"]] for o in ops]
    needed = {i for i, o in enumerate(ops) if o["ok"]}

    def dfs(done: frozenset[int], state: dict[Any, Any]) -> bool:
        if needed <= done:
            return True  # the info ops left out never took effect
        for i, o in enumerate(ops):
            if i in done or any(j not in done for j in before[i]):
                continue
            new = apply(state, o)
            if new is not None and dfs(done | {i}, new):
                return True
        return False

    return dfs(frozenset(), {})


class Chooser:
    """Random choices, from hypothesis or from a seeded RNG."""

    def __init__(self, pick: Callable[[Sequence[Any]], Any], number: Callable[[int, int], int]):
        self.pick = pick
        self.number = number


def random_history(c: Chooser) -> dict[str, Any]:
    """A small history: ≤ 6 ops by ≤ 3 processes, interleaved at random.

    Half are simulated (a real register with random linearization points inside
    each window, info ops taking effect or not, possibly after their info event,
    then maybe one read value changed); half have random read values.
    """
    model = c.pick(["cas-register", "kv"])
    if model == "kv":
        keys: list[Any] = ["a", "b"]
        fs = ["read", "read", "write", "cas", "append"]
        values: list[Any] = ["0", "1"]
        reads: list[Any] = [None, "", "0", "1", "x", "y", "xy", "yx", "0x"]
        initial = c.pick([None, "0", {"a": "1"}])
    else:
        keys = [None]
        fs = ["read", "read", "write", "cas"]
        values = [0, 1, 2]
        reads = [None, 0, 1, 2]
        initial = c.pick([0, None])
    n_ops = c.number(1, 6)
    n_procs = c.number(1, 3)
    specs = []
    for _ in range(n_ops):
        f = c.pick(fs)
        arg: Any = None
        if f == "write":
            arg = c.pick(values)
        elif f == "cas":
            arg = [
                c.pick(values + [initial] if not isinstance(initial, dict) else values),
                c.pick(values),
            ]
        elif f == "append":
            arg = c.pick(["x", "y"])
        specs.append(
            {
                "process": c.number(0, n_procs - 1),
                "f": f,
                "key": c.pick(keys),
                "value": arg,
                "type": c.pick(["ok", "ok", "ok", "fail", "info"]),
            }
        )
    # Interleave: each step invokes a process's next op or completes its open one.
    queues = {p: [s for s in specs if s["process"] == p] for p in range(n_procs)}
    open_op: dict[int, dict[str, Any]] = {}
    order: list[tuple[str, dict[str, Any]]] = []
    next_id = 0
    while any(queues.values()) or open_op:
        busy = sorted(p for p in range(n_procs) if queues[p] or p in open_op)
        p = c.pick(busy)
        if p in open_op:
            order.append(("complete", open_op.pop(p)))
        else:
            spec = queues[p].pop(0)
            spec["id"] = next_id
            next_id += 1
            open_op[p] = spec
            order.append(("invoke", spec))
    positions = {(kind, s["id"]): i for i, (kind, s) in enumerate(order)}
    for s in specs:
        s["call"], s["ret"] = positions[("invoke", s["id"])], positions[("complete", s["id"])]
    if c.pick([True, False]):
        _simulate(c, specs, len(order), initial, values if model == "cas-register" else None)
        if c.pick([True, False]):
            ok_reads = [s for s in specs if s["f"] == "read" and s["type"] == "ok"]
            if ok_reads:
                c.pick(ok_reads)["seen"] = c.pick(reads)
    else:
        for s in specs:
            s["seen"] = c.pick(reads)
    events = []
    for kind, s in order:
        if kind == "invoke":
            value, etype = s["value"], "invoke"
        elif s["f"] == "read":
            value, etype = (s["seen"] if s["type"] == "ok" else None), s["type"]
        else:
            value, etype = s["value"], s["type"]
        events.append(
            {
                "process": s["process"],
                "type": etype,
                "f": s["f"],
                "key": s["key"],
                "value": value,
                "id": s["id"],
            }
        )
    return {"format": 1, "name": "random", "model": model, "initial_value": initial, "ops": events}


def _simulate(
    c: Chooser, specs: list[dict[str, Any]], end: int, initial: Any, ints: list[Any] | None
) -> None:
    """Run the ops on a real register at random points inside their windows."""
    points = []
    for s in specs:
        if s["type"] == "fail" or (s["type"] == "info" and not c.pick([True, False])):
            continue
        last = s["ret"] if s["type"] == "ok" else end  # an info op may land after its info
        points.append((c.number(s["call"], last - 1) * 10 + c.number(0, 9), s))
    state: dict[Any, Any] = {}
    for _, s in sorted(points, key=lambda p: p[0]):
        key = s["key"]
        cur = state.get(key, initial.get(key) if isinstance(initial, dict) else initial)
        if s["f"] == "read":
            s["seen"] = cur
        elif s["f"] == "write":
            state[key] = s["value"]
        elif s["f"] == "cas":
            if _eq(cur, s["value"][0]):
                state[key] = s["value"][1]
            elif s["type"] == "ok":
                s["type"] = "fail"  # a cas whose comparison failed is a definite failure
        elif cur is None or isinstance(cur, str):
            state[key] = (cur or "") + s["value"]
        elif s["type"] == "ok":
            s["type"] = "fail"
    for s in specs:
        s.setdefault("seen", None)


def agree(history: dict[str, Any]) -> bool:
    expected = brute_force(history)
    got = check_history(parse_history(history), timeout=None).linearizable
    assert got == expected, json.dumps(history)
    return expected


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_checker_agrees_with_brute_force(data: st.DataObject) -> None:
    c = Chooser(
        lambda seq: data.draw(st.sampled_from(list(seq))),
        lambda lo, hi: data.draw(st.integers(lo, hi)),
    )
    agree(random_history(c))


def test_checker_agrees_with_brute_force_on_seeded_histories() -> None:
    rng = random.Random(20261121)
    c = Chooser(lambda seq: rng.choice(list(seq)), rng.randint)
    verdicts = [agree(random_history(c)) for _ in range(10_000)]
    # Both verdicts must be well represented, or the comparison proves little.
    assert verdicts.count(True) > 3000
    assert verdicts.count(False) > 3000


def test_brute_force_agrees_with_the_literal_histories() -> None:
    for path in sorted(HISTORIES.glob("*.json")):
        history = json.loads(path.read_text())
        if history["model"] != "multi-register":
            assert brute_force(history) == history["expected_linearizable"], path.name


def test_small_generated_histories_agree_with_brute_force() -> None:
    for seed in range(300):
        for model in ("kv", "cas-register"):
            raw = generate_history(
                ops=6,
                keys=2,
                processes=3,
                model=model,
                seed=seed,
                values=2,
                p_info=0.2,
                p_fail=0.1,
            )
            assert brute_force(raw) is True
            assert check_history(parse_history(raw), timeout=None).linearizable is True
