"""The linearizability search: Wing & Gong's algorithm with Lowe's improvements.

Input: one partition's operations (one key), each with a step input, the
position of its invocation and the position of its completion (``None`` for an
indeterminate, `info`, operation). Output: linearizable or not, or unknown when
the deadline passed.

How it works (Lowe, "Testing for linearizability", 2017; as in Porcupine):

* The operations become *entries*, a call entry and a return entry each, in a
  doubly linked list ordered by position. An info operation's return is at
  +infinity: it has a call entry only, since the search never reaches the end
  of the list (below).
* Scanning from the head, each call entry met before the first return entry is
  an operation that may take effect now. If the model accepts it and the pair
  (set of linearized operations, new state) has not been explored before, the
  search *lifts* its entries out of the list, pushes it and rescans from the
  head. Otherwise it moves to the next entry.
* Meeting a return entry means that operation had to take effect by now and
  cannot: the search pops the last linearized operation, *unlifts* its entries
  (dancing links: they remember their neighbours) and tries the entry after it.
  Popping from an empty stack means no linearization exists.
* The history is linearizable once every `ok` operation is linearized: the
  info operations still in the list are the ones that never took effect
  (Jepsen: an info op took effect once after its invocation, or never). So the
  scan cannot reach the tail while an `ok` operation remains, as that
  operation's return entry comes first.
* The cache of (bitset of linearized operations, state) pairs prunes: what
  can still happen depends only on which operations are linearized and the
  state they left, not on their order. The bitset is a Python int.
* One addition to Lowe's algorithm, forced moves: at each new configuration a
  read (an *observer*, see `Model.observes`) that is legal and may go now is
  linearized at once and no alternative is tried at that configuration (the
  argument is in the code). Without it, k concurrent reads of the same value
  cost 2^k cached configurations each time the search backtracks across them;
  with it, a single register with 16 concurrent clients checks ~20x faster
  (docs/checker.md).

For a `false` the search also reports the deepest point it reached: the
longest linearized prefix, the state after it, and the operation whose return
entry stopped it there (Porcupine's "partial linearizations").
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from jepsen_like.checker.models import Input, Model, State

Verdict = bool | Literal["unknown"]

# How many loop iterations between two looks at the clock (each is a few µs at most).
_CLOCK_EVERY = 512


@dataclass(slots=True)
class SearchResult:
    linearizable: Verdict
    # Set when linearizable is False: indices into the input operations.
    prefix: list[int] = field(default_factory=list)  # the longest linearized prefix, in order
    stuck: int | None = None  # the op that could not be linearized by its completion
    state: State | None = None  # the model state after `prefix`
    linearized: int = 0  # bitset of `prefix`
    steps: int = 0  # model steps tried (for benchmarks)


def search(
    model: Model,
    inputs: Sequence[Input],
    calls: Sequence[int],
    rets: Sequence[int | None],
    deadline: float | None = None,
) -> SearchResult:
    """Decide whether operations i (input ``inputs[i]``, invoked at ``calls[i]``,
    completed at ``rets[i]``, or never for ``None``) linearize in `model`.

    Positions must be distinct. `deadline` is a `time.monotonic()` instant after
    which the answer is "unknown".
    """
    n = len(inputs)
    n_ok = sum(1 for r in rets if r is not None)
    if n_ok == 0:
        # Only indeterminate operations: none of them need have taken effect.
        return SearchResult(True)

    # Entry 2i is op i's call, 2i + 1 its return; then the head and tail sentinels.
    head, tail = 2 * n, 2 * n + 1
    positioned = [(calls[i], 2 * i) for i in range(n)]
    positioned += [(r, 2 * i + 1) for i, r in enumerate(rets) if r is not None]
    positioned.sort()
    order = [head] + [e for _, e in positioned] + [tail]
    nxt = [0] * (2 * n + 2)
    prv = [0] * (2 * n + 2)
    for a, b in itertools.pairwise(order):
        nxt[a] = b
        prv[b] = a
    has_ret = [r is not None for r in rets]

    step = model.step
    observer = [model.observes(x) for x in inputs]
    state = model.init
    linearized = 0
    cache: set[tuple[int, State]] = set()
    stack: list[int] = []  # lifted call entries
    saved: list[State] = []  # the state before each of them
    forced: list[bool] = []  # whether each was a forced (observer) move
    remaining = n_ok
    best_depth = -1
    best = SearchResult(False)
    monotonic = time.monotonic
    steps = 0
    ticks = 0

    fresh = True  # at a configuration reached by a lift: look for a forced move first
    entry = head
    while True:
        ticks += 1
        if ticks % _CLOCK_EVERY == 0 and deadline is not None and monotonic() > deadline:
            return SearchResult("unknown", steps=steps)
        if fresh:
            fresh = False
            # Forced move: an observer (a read) that is legal now and may go now is
            # linearized now, with no alternative tried. Any linearization that puts
            # it later still works with it moved here: it changes no state, and
            # moving an op earlier breaks no real-time order since every op that
            # completed before its invocation is already linearized. So if this
            # configuration has a linearization, it has one that starts with it.
            e = nxt[head]
            while e & 1 == 0:
                i = e >> 1
                if observer[i]:
                    steps += 1
                    if step(state, inputs[i])[0]:
                        break
                e = nxt[e]
            if e & 1 == 0:
                new_linearized = linearized | (1 << i)
                seen = (new_linearized, state)
                if seen not in cache:
                    cache.add(seen)
                    stack.append(e)
                    saved.append(state)
                    forced.append(True)
                    linearized = new_linearized
                    p, q = prv[e], nxt[e]
                    nxt[p] = q
                    prv[q] = p
                    if has_ret[i]:
                        r = e + 1
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        prv[q] = p
                        remaining -= 1
                        if remaining == 0:
                            return SearchResult(True, steps=steps)
                    fresh = True
                    continue
                # Explored before and failed, so this configuration fails too.
                entry = -1
            else:
                entry = nxt[head]
        if entry >= 0 and entry & 1 == 0:
            # A call entry: try to linearize its operation now. Observers are
            # illegal here, or the forced move would have taken one.
            i = entry >> 1
            if observer[i]:
                entry = nxt[entry]
                continue
            steps += 1
            ok, new_state = step(state, inputs[i])
            if ok:
                new_linearized = linearized | (1 << i)
                seen = (new_linearized, new_state)
                if seen not in cache:
                    cache.add(seen)
                    stack.append(entry)
                    saved.append(state)
                    forced.append(False)
                    state = new_state
                    linearized = new_linearized
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    if has_ret[i]:
                        r = entry + 1
                        p, q = prv[r], nxt[r]
                        nxt[p] = q
                        prv[q] = p
                        remaining -= 1
                        if remaining == 0:
                            return SearchResult(True, steps=steps)
                    fresh = True
                    continue
            entry = nxt[entry]
            continue
        if entry >= 0:
            # A return entry: its operation must have taken effect by now, and none
            # of the candidates before it could go next.
            depth = len(stack)
            if depth > best_depth:
                best_depth = depth
                best = SearchResult(
                    False,
                    prefix=[e >> 1 for e in stack],
                    stuck=entry >> 1,
                    state=state,
                    linearized=linearized,
                )
        # Backtrack: undo the last move; undo the one before too while the undone
        # move was forced (its configuration had no other option).
        while True:
            if not stack:
                best.steps = steps
                return best
            entry = stack.pop()
            state = saved.pop()
            was_forced = forced.pop()
            i = entry >> 1
            linearized ^= 1 << i
            if has_ret[i]:
                r = entry + 1
                nxt[prv[r]] = r
                prv[nxt[r]] = r
                remaining += 1
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            if not was_forced:
                break
        entry = nxt[entry]
