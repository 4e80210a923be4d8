"""Checking a history: split it into independent partitions, search each one.

`check_history` is the checker's one entry point; `check_file` reads the file
first. Linearizability is local (Herlihy & Wing): a history is linearizable iff
its restriction to each object is, so a `kv` history is checked key by key
(Porcupine's P-compositionality), which keeps each search small. A
`multi-register` txn touches several keys at once, so its partitions are the
connected groups of keys that txns touch together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jepsen_like.checker.history import History, Operation, load_history
from jepsen_like.checker.models import (
    Input,
    Model,
    register_input,
    register_model,
    txn_input,
    txn_model,
)
from jepsen_like.checker.search import Verdict, search
from jepsen_like.checker.values import thaw

DEFAULT_TIMEOUT = 60.0

Key = str | None | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Partition:
    """The operations on one independent object, in invocation order."""

    key: Key  # kv: the key; cas-register: None; multi-register: the group's keys
    model: Model
    ops: list[Operation]
    inputs: list[Input]


@dataclass(frozen=True, slots=True)
class Violation:
    """Where a non-linearizable history broke: all ids are operation ids."""

    key: Key
    op: int  # the operation that could not be linearized by its completion
    window: list[int]  # that op and the ops concurrent with it, in invocation order
    prefix: list[int]  # the longest linearized prefix found, in linearization order
    state: Any  # the model state (JSON) after `prefix`

    def to_json(self) -> dict[str, Any]:
        key = list(self.key) if isinstance(self.key, tuple) else self.key
        return {
            "key": key,
            "op": self.op,
            "window": self.window,
            "prefix": self.prefix,
            "state": self.state,
        }


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    model: str
    linearizable: Verdict
    seconds: float
    violation: Violation | None = None
    failing_keys: list[Key] = field(default_factory=list)
    reason: str = ""  # why the verdict is "unknown"
    partitions: int = 0
    steps: int = 0

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "model": self.model,
            "linearizable": self.linearizable,
            "seconds": round(self.seconds, 6),
        }
        if self.violation is not None:
            doc.update(self.violation.to_json())
            doc["failing_keys"] = [
                list(k) if isinstance(k, tuple) else k for k in self.failing_keys
            ]
        else:
            doc.update({"key": None, "window": []})
        if self.reason:
            doc["reason"] = self.reason
        return doc


def check_file(path: str | Path, timeout: float | None = DEFAULT_TIMEOUT) -> CheckResult:
    return check_history(load_history(path), timeout)


def check_history(history: History, timeout: float | None = DEFAULT_TIMEOUT) -> CheckResult:
    """Decide whether `history` is linearizable; "unknown" if `timeout` seconds pass first.

    Every partition is searched (until the deadline) so that all failing keys
    are listed; the reported violation is the one with the smallest window.
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    violations: list[Violation] = []
    timed_out: list[Key] = []
    steps = 0
    parts = partitions(history)
    for part in parts:
        if deadline is not None and time.monotonic() > deadline:
            timed_out.append(part.key)
            continue
        calls = [op.call for op in part.ops]
        rets = [op.ret if op.type == "ok" else None for op in part.ops]
        found = search(part.model, part.inputs, calls, rets, deadline)
        steps += found.steps
        if found.linearizable == "unknown":
            timed_out.append(part.key)
        elif found.linearizable is False:
            assert found.stuck is not None
            stuck = part.ops[found.stuck]
            # The window: the stuck op and every op taking part that overlaps it in
            # real time (an info op's window never closes), linearized or not.
            window = [
                op.id
                for op in part.ops
                if op.call < stuck.ret and (op.type == "info" or op.ret > stuck.call)
            ]
            violations.append(
                Violation(
                    key=part.key,
                    op=stuck.id,
                    window=window,
                    prefix=[part.ops[i].id for i in found.prefix],
                    state=_describe(part.key, found.state),
                )
            )
    seconds = time.monotonic() - start
    if violations:
        return CheckResult(
            history.name,
            history.model,
            False,
            seconds,
            violation=min(violations, key=lambda v: len(v.window)),
            failing_keys=[v.key for v in violations],
            reason=_timeout_reason(timed_out, timeout) if timed_out else "",
            partitions=len(parts),
            steps=steps,
        )
    if timed_out:
        return CheckResult(
            history.name,
            history.model,
            "unknown",
            seconds,
            reason=_timeout_reason(timed_out, timeout),
            partitions=len(parts),
            steps=steps,
        )
    return CheckResult(
        history.name, history.model, True, seconds, partitions=len(parts), steps=steps
    )


def _timeout_reason(keys: list[Key], timeout: float | None) -> str:
    shown = ", ".join(repr(list(k) if isinstance(k, tuple) else k) for k in keys[:5])
    more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
    return f"time limit of {timeout} s reached; unchecked key(s): {shown}{more}"


def _describe(key: Key, state: Any) -> Any:
    if isinstance(key, tuple):  # multi-register: sorted (key, value) pairs
        return {k: thaw(v) for k, v in state}
    return thaw(state)


def takes_part(op: Operation) -> bool:
    """Whether an operation constrains the search (Jepsen's completion semantics)."""
    if op.type == "fail":
        # Definitely did not take effect: leave it out.
        return False
    # An info read may have taken effect, but a read changes nothing and its
    # value is unknown, so it constrains nothing either way.
    return not (op.type == "info" and _read_only(op))


def _read_only(op: Operation) -> bool:
    if op.f == "read":
        return True
    if op.f == "txn":
        return all(mop[0] == "read" for mop in op.value)
    return False


def partitions(history: History) -> list[Partition]:
    """The history's independent objects, each with its model and operations."""
    ops = [op for op in history.operations if takes_part(op)]
    if history.model == "cas-register":
        model = register_model(history.initial_value)
        return [Partition(None, model, ops, [register_input(op) for op in ops])]
    if history.model == "kv":
        return _kv_partitions(history.initial_value, ops)
    return _txn_partitions(history.initial_value, ops)


def _kv_partitions(initial: Any, ops: list[Operation]) -> list[Partition]:
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)  # type: ignore[arg-type]
    start: Callable[[str], Any]
    if isinstance(initial, dict):
        # An object maps keys to start values; a key it does not name starts absent.
        start = initial.get
    else:
        # A scalar (or list) is every key's start value.
        def start(_key: str) -> Any:
            return initial

    return [
        Partition(key, register_model(start(key)), key_ops, [register_input(op) for op in key_ops])
        for key, key_ops in by_key.items()
    ]


def _txn_partitions(initial: dict[str, Any] | None, ops: list[Operation]) -> list[Partition]:
    # Union-find over keys: a txn joins all the keys it touches into one object.
    parent: dict[str, str] = {}

    def find(k: str) -> str:
        root = k
        while parent[root] != root:
            root = parent[root]
        while parent[k] != root:
            parent[k], k = root, parent[k]
        return root

    for op in ops:
        keys = [mop[1] for mop in op.value]
        for k in keys:
            parent.setdefault(k, k)
        for k in keys[1:]:
            parent[find(k)] = find(keys[0])
    groups: dict[str, list[Operation]] = {}
    for op in ops:
        if op.value:
            groups.setdefault(find(op.value[0][1]), []).append(op)
    parts = []
    for root, group_ops in groups.items():
        keys = sorted(k for k in parent if find(k) == root)
        model = txn_model(initial, keys)
        parts.append(Partition(tuple(keys), model, group_ops, [txn_input(op) for op in group_ops]))
    return parts


def operations_on(history: History, key: Key) -> list[Operation]:
    """All operations on `key`'s object, including those that take no part (for reports)."""
    if history.model == "cas-register":
        return list(history.operations)
    if history.model == "kv":
        return [op for op in history.operations if op.key == key]
    keys = set(key or ())
    return [op for op in history.operations if any(mop[1] in keys for mop in op.value)]
