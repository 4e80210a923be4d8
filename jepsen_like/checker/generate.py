"""Random, realistic, linearizable histories (for tests and benchmarks).

A discrete-event simulation of concurrent clients against one real, atomic
store: each client invokes an operation, the store applies it at one instant
after the invocation (its linearization point), and the client sees the
completion some time later. So every history it writes is linearizable by
construction. Outcomes follow Jepsen's rules:

* a cas whose comparison fails at the store completes `fail`;
* with probability `p_fail` a request is rejected before it reaches the store:
  `fail`, no effect;
* with probability `p_info` the client times out: `info`. The request is then
  lost, or applied at some later instant, possibly after the `info` event; like
  Jepsen, the client continues as a new process.

`corrupt` then breaks a history on purpose (reads of values never written).

    python -m jepsen_like.checker.generate --ops 10000 --keys 100 --processes 20 -o h.json
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

MIXES: dict[str, dict[str, float]] = {
    "cas-register": {"read": 0.5, "write": 0.3, "cas": 0.2},
    "kv": {"read": 0.45, "write": 0.25, "cas": 0.15, "append": 0.15},
}
_INVOKE, _APPLY, _COMPLETE = 0, 1, 2


@dataclass(slots=True)
class _Op:
    id: int
    process: int
    f: str
    key: str | None
    value: Any
    outcome: str  # planned: "ok", "fail" (rejected) or "info" (timed out)
    applies: bool = True  # an info op: whether the store ever sees it
    result: Any = None


@dataclass(slots=True)
class _Client:
    process: int
    seen: dict[Any, Any] = field(default_factory=dict)  # key -> last value seen (for cas)


def generate_history(
    *,
    ops: int = 1000,
    keys: int = 10,
    processes: int = 5,
    model: str = "kv",
    seed: int = 0,
    values: int = 10,
    p_info: float = 0.01,
    p_fail: float = 0.02,
    latency_ns: int = 1_000_000,
    think_ns: int = 100_000,
    timeout_ns: int = 5_000_000,
    initial_value: Any = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A linearizable history of `ops` operations by `processes` concurrent clients.

    `kv` spreads the operations uniformly over `keys` keys ("k0", "k1", ...);
    `cas-register` is one register (`keys` is ignored). Written values are drawn
    from `values` distinct values (kv: as strings, so that appends apply).
    """
    if model not in MIXES:
        raise ValueError(f"generate supports {', '.join(MIXES)}, not {model!r}")
    rng = random.Random(seed)
    mix = MIXES[model]
    fs, weights = list(mix), list(mix.values())
    key_names: list[str | None] = [f"k{i}" for i in range(keys)] if model == "kv" else [None]
    store: dict[Any, Any] = {}
    if model == "kv" and isinstance(initial_value, dict):
        store.update(initial_value)
    else:
        store.update({k: initial_value for k in key_names})
    appends = 0

    def value() -> Any:
        v = rng.randrange(values)
        return str(v) if model == "kv" else v

    events: list[dict[str, Any]] = []
    queue: list[tuple[int, int, int, Any]] = []
    seq = 0

    def schedule(at: int, kind: int, item: Any) -> None:
        nonlocal seq
        heapq.heappush(queue, (at, seq, kind, item))
        seq += 1

    clients = [_Client(p) for p in range(processes)]
    next_process = processes
    for c in clients:
        schedule(int(rng.expovariate(1 / think_ns)), _INVOKE, c)
    invoked = 0
    in_flight: dict[int, tuple[_Client, _Op]] = {}

    def record(kind: str, op: _Op, at: int, val: Any) -> None:
        events.append(
            {
                "process": op.process,
                "type": kind,
                "f": op.f,
                "key": op.key,
                "value": val,
                "id": op.id,
                "time": at,
            }
        )

    while queue:
        now, _, kind, item = heapq.heappop(queue)
        if kind == _INVOKE:
            client = item
            if invoked >= ops:
                continue
            key = rng.choice(key_names)
            f = rng.choices(fs, weights)[0]
            if f == "write":
                arg: Any = value()
            elif f == "cas":
                seen = client.seen.get(key)
                expected = seen if seen is not None and rng.random() < 0.5 else value()
                arg = [expected, value()]
            elif f == "append":
                appends += 1
                arg = f"{appends};"
            else:
                arg = None
            roll = rng.random()
            outcome = "info" if roll < p_info else "fail" if roll < p_info + p_fail else "ok"
            op = _Op(invoked, client.process, f, key, arg, outcome)
            invoked += 1
            in_flight[op.id] = (client, op)
            record("invoke", op, now, arg)
            if outcome == "fail":
                schedule(now + 1 + int(rng.expovariate(2 / latency_ns)), _COMPLETE, op)
            elif outcome == "info":
                schedule(now + timeout_ns, _COMPLETE, op)
                op.applies = f != "read" and rng.random() < 0.5
                if op.applies:
                    # It may reach the store long after the client gave up.
                    schedule(now + 1 + int(rng.uniform(0, 3 * timeout_ns)), _APPLY, op)
            else:
                reach = now + 1 + int(rng.expovariate(2 / latency_ns))
                schedule(reach, _APPLY, op)
        elif kind == _APPLY:
            op = item
            current = store.get(op.key)
            if op.f == "read":
                op.result = current
            elif op.f == "write":
                store[op.key] = op.value
            elif op.f == "cas":
                if current == op.value[0]:
                    store[op.key] = op.value[1]
                elif op.outcome == "ok":
                    op.outcome = "fail"  # the comparison failed: a definite failure
            else:
                store[op.key] = (current or "") + op.value
            if op.outcome != "info":  # an info op's completion is already scheduled
                schedule(now + 1 + int(rng.expovariate(2 / latency_ns)), _COMPLETE, op)
        else:
            op = item
            client, _ = in_flight.pop(op.id)
            if op.outcome == "ok":
                shown = op.result if op.f == "read" else op.value
                client.seen[op.key] = op.value[1] if op.f == "cas" else shown
            elif op.f == "read":
                shown = None
            else:
                shown = op.value
            record(op.outcome, op, now, shown)
            if op.outcome == "info":
                # Jepsen: a process whose op is indeterminate is retired; a fresh
                # process takes over the client's slot.
                client.process = next_process
                next_process += 1
            schedule(now + 1 + int(rng.expovariate(1 / think_ns)), _INVOKE, client)
    shape = f"{keys}keys-" if model == "kv" else ""
    return {
        "format": 1,
        "name": name or f"generated-{model}-{ops}ops-{shape}{processes}procs-seed{seed}",
        "model": model,
        "initial_value": initial_value,
        "expected_linearizable": True,
        "notes": "generated by jepsen_like.checker.generate: linearizable by construction",
        "source": "jepsen_like.checker.generate",
        "ops": events,
    }


def corrupt(history: dict[str, Any], reads: int = 1, seed: int = 0) -> dict[str, Any]:
    """A copy of `history` in which `reads` ok reads return a value never written.

    Such a read cannot be linearized, so the copy is not linearizable (if it
    has at least one ok read).
    """
    rng = random.Random(seed)
    events = [dict(ev) for ev in history["ops"]]
    ok_reads = [i for i, ev in enumerate(events) if ev["f"] == "read" and ev["type"] == "ok"]
    chosen = rng.sample(ok_reads, min(reads, len(ok_reads)))
    for i in chosen:
        bogus = f"never-written-{events[i]['id']}"
        events[i]["value"] = bogus if history["model"] == "kv" else -1 - events[i]["id"]
    broken = dict(history, ops=events, name=history["name"] + "-corrupt")
    broken["expected_linearizable"] = False if chosen else history.get("expected_linearizable")
    broken["notes"] = f"corrupted reads (ids): {sorted(events[i]['id'] for i in chosen)}"
    return broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jepsen_like.checker.generate",
        description="Write a random linearizable history (history-format.md, version 1).",
    )
    parser.add_argument("--model", choices=sorted(MIXES), default="kv")
    parser.add_argument("--ops", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--values", type=int, default=10, help="distinct written values")
    parser.add_argument("--info", type=float, default=0.01, help="probability of an info")
    parser.add_argument("--fail", type=float, default=0.02, help="probability of a rejection")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corrupt", type=int, default=0, help="reads to corrupt")
    parser.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    history = generate_history(
        ops=args.ops,
        keys=args.keys,
        processes=args.processes,
        model=args.model,
        seed=args.seed,
        values=args.values,
        p_info=args.info,
        p_fail=args.fail,
    )
    if args.corrupt:
        history = corrupt(history, args.corrupt, args.seed)
    data = orjson.dumps(history)
    if args.output is None:
        sys.stdout.buffer.write(data + b"\n")
    else:
        args.output.write_bytes(data + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
