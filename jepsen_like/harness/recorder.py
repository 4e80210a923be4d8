"""Recording a history (history-format v1) while clients run.

Real-time order is the order in which events are appended. All clients run
on one asyncio event loop thread, so appends are serialized, and each event is
stamped with the clock *as it is appended*: an invocation is recorded before
its request is sent and a completion after its response arrived, which can
only widen an operation's window, never narrow it (sound for the checker).
Timestamps are nanoseconds since the recorder was created, from a monotonic
clock, so `time` never contradicts the event order.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

COMPLETIONS = ("ok", "fail", "info")


@dataclass(slots=True)
class OpenOp:
    id: int
    process: int
    f: str
    key: str | None
    value: Any
    time: int


@dataclass
class Recorder:
    clock: Callable[[], int] = time.monotonic_ns
    events: list[dict[str, Any]] = field(default_factory=list)
    t0: int = -1
    _next_id: int = 0
    _open: dict[int, OpenOp] = field(default_factory=dict)
    _open_process: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.t0 < 0:
            self.t0 = self.clock()

    def now(self) -> int:
        """Nanoseconds since the recorder started."""
        return self.clock() - self.t0

    def invoke(self, process: int, f: str, key: str | None, value: Any, **extra: Any) -> int:
        """Record an invocation; returns the operation id its completion must use."""
        if process in self._open_process:
            raise ValueError(
                f"process {process} invokes while op {self._open_process[process]} is open"
            )
        op_id = self._next_id
        self._next_id += 1
        t = self.now()
        self._open[op_id] = OpenOp(op_id, process, f, key, value, t)
        self._open_process[process] = op_id
        ev = {
            "process": process,
            "type": "invoke",
            "f": f,
            "key": key,
            "value": value,
            "id": op_id,
            "time": t,
        }
        ev.update(extra)
        self.events.append(ev)
        return op_id

    def complete(self, op_id: int, kind: str, value: Any = None, **extra: Any) -> dict[str, Any]:
        """Record the completion of `op_id`: ok (with the value), fail or info."""
        if kind not in COMPLETIONS:
            raise ValueError(f"completion type {kind!r}")
        op = self._open.pop(op_id)
        del self._open_process[op.process]
        t = self.now()
        ev = {
            "process": op.process,
            "type": kind,
            "f": op.f,
            "key": op.key,
            "value": value,
            "id": op_id,
            "time": t,
            "latency_ns": t - op.time,
        }
        ev.update(extra)
        self.events.append(ev)
        return ev

    def close_open(self, reason: str = "never completed") -> int:
        """Give every still-open operation a synthetic info completion; returns how many."""
        n = 0
        for op_id in sorted(self._open):
            op = self._open[op_id]
            self.complete(op_id, "info", op.value, synthetic=True, error=reason)
            n += 1
        return n

    @property
    def open_ops(self) -> int:
        return len(self._open)

    def document(
        self, name: str, model: str, initial_value: Any = None, notes: str = "", **extra: Any
    ) -> dict[str, Any]:
        """The history as a format-1 document (call after `close_open`)."""
        doc: dict[str, Any] = {
            "format": 1,
            "name": name,
            "model": model,
            "initial_value": initial_value,
            "expected_linearizable": None,
            "notes": notes,
        }
        doc.update(extra)
        doc["ops"] = self.events
        return doc
