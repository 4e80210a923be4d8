"""Models: the sequential specification a history is checked against.

A model is tiny and pure: an initial state and ``step(state, input) -> (ok,
new_state)``, where ``ok`` says whether the operation, with the result the
client saw, is legal in ``state``. States are hashable and compare by value
(the search caches ``(linearized ops, state)`` pairs). Values are frozen JSON
(`values.freeze`), so ``true`` is not ``1``.

This module is the checker's own model of a register; it deliberately imports
nothing from `raftmem`: a checker that shared code with the system it checks
would share its bugs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from jepsen_like.checker.history import Operation
from jepsen_like.checker.values import freeze

State = Hashable
Input = Any
Step = Callable[[State, Input], tuple[bool, State]]

READ, WRITE, CAS, APPEND = 0, 1, 2, 3
_CODES = {"read": READ, "write": WRITE, "cas": CAS, "append": APPEND}


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    init: State
    step: Step
    # Whether an input is an observer: in every state it is either illegal or
    # leaves the state as it is (a read). The search linearizes a legal observer
    # as soon as it may, without trying alternatives (see search.py).
    observes: Callable[[Input], bool]


def register_step(state: State, op: Input) -> tuple[bool, State]:
    """One register: read / write / cas, and append (string concatenation)."""
    code, arg = op
    if code == READ:
        return state == arg, state
    if code == WRITE:
        return True, arg
    if code == CAS:
        # A cas whose comparison failed is recorded as `fail` and never gets here;
        # an ok or info cas took effect only if the register held `expected`.
        return state == arg[0], arg[1]
    # Append: an absent register (null) counts as "" as an operand only; a read
    # of it still returns null, and "" is a different value. Appending to a
    # non-string cannot succeed, so an ok append on one is a violation and an
    # info append on one can only have had no effect.
    if state is None:
        return True, arg
    if type(state) is str:
        return True, state + arg
    return False, state


def register_observes(op: Input) -> bool:
    return bool(op[0] == READ)


def register_model(initial: Any) -> Model:
    return Model("register", freeze(initial), register_step, register_observes)


def register_input(op: Operation) -> Input:
    """The step input for a read / write / cas / append operation."""
    code = _CODES[op.f]
    if code == READ:
        return (READ, freeze(op.result))
    if code == CAS:
        return (CAS, (freeze(op.value[0]), freeze(op.value[1])))
    return (code, freeze(op.value))


# A txn's read micro-op whose value is null constrains nothing (history-format.md).
UNCONSTRAINED = object()


def txn_step(state: State, txn: Input) -> tuple[bool, State]:
    """Several registers (state: sorted (key, value) pairs); a txn applies atomically."""
    regs = dict(state)  # type: ignore[call-overload]
    for is_write, key, value in txn:
        if is_write:
            regs[key] = value
        elif value is not UNCONSTRAINED and regs[key] != value:
            return False, state
    return True, tuple(sorted(regs.items()))


def txn_observes(txn: Input) -> bool:
    return not any(is_write for is_write, _, _ in txn)


def txn_model(initial: dict[str, Any] | None, keys: list[str]) -> Model:
    """Registers `keys`, each starting at its value in `initial` (null when absent)."""
    start = initial or {}
    init = tuple(sorted((k, freeze(start.get(k))) for k in keys))
    return Model("multi-register", init, txn_step, txn_observes)


def txn_input(op: Operation) -> Input:
    # An ok txn's completion carries the values its reads saw; any other keeps
    # the invocation's micro-ops, whose reads are null and so unconstrained.
    mops = op.result if op.type == "ok" and op.result is not None else op.value
    return tuple(
        (f == "write", key, freeze(value) if f == "write" or value is not None else UNCONSTRAINED)
        for f, key, value in mops
    )
