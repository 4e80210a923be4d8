"""The replicated steps of a range move between two groups (statemachine/ranges.py).

Two state machines stand for groups A (owns the first half of the ring) and B
(owns the second). The second quarter moves from A to B: freeze on A, stage on
B in chunks (read with the ``range_rows`` read op, as the driver does),
release on A, activate on B. Checked after every step: who may serve each
memory of the range (exactly one group, or none between release and
activation), that writes wait while frozen, that every step can be repeated
(a driver that crashed and starts over), and that the memories arrive
unchanged (versions, timestamps, embeddings, tags) and searchable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raftmem import commands as C
from raftmem.errors import EpochMismatch
from raftmem.keyspace import RING_SIZE, hash_key
from raftmem.placement.routing import initial_table
from raftmem.statemachine import Reader, StateMachine
from raftmem.statemachine.reader import ReadSpec, refuse_unowned, run_read
from tests.unit.test_ownership import Log

TABLE = initial_table(["n1"], 2, 1)
QUARTER = RING_SIZE // 4
START, END = QUARTER, 2 * QUARTER  # inside A's half
MOVE = "move-1"


def ids(n: int = 200) -> list[str]:
    return [f"m{i}" for i in range(n)]


def moving(mid: str) -> bool:
    return START <= hash_key("ns", mid) < END


def memory(mid: str) -> dict[str, Any]:
    i = int(mid[1:])
    return {"id": mid, "agent_id": f"a{i % 3}", "text": f"text {mid}",
            "embedding": [float(i % 7) + 1.0, 1.0, float(i % 5)], "tags": [f"t{i % 4}"],
            "metadata": {"i": i}, "expires_at": None}


@pytest.fixture
def groups(tmp_path: Path) -> Any:
    a = StateMachine(str(tmp_path / "a.db"), genesis=TABLE.ownership(0))
    b = StateMachine(str(tmp_path / "b.db"), genesis=TABLE.ownership(1))
    la, lb = Log(a), Log(b)
    for lg in (la, lb):
        lg(C.create_namespace("ns", 3, "l2", 1, None))
    for mid in ids():
        lg = la if TABLE.group_for("ns", mid) == 0 else lb
        assert lg(C.put("ns", memory(mid), 10, None, None))["ok"]
    # A later version of some moving memories: versions must travel too.
    for mid in [m for m in ids() if moving(m)][:5]:
        assert la(C.patch("ns", mid, {"text": "patched"}, None, 20, None, None))["ok"]
    yield a, b, la, lb
    a.close()
    b.close()


def serves(sm: StateMachine, mid: str) -> dict[str, Any] | None:
    """What a single-key read of ``mid`` on this group answers (None: refused)."""
    with Reader(sm.path) as r, r.transaction():
        try:
            refuse_unowned(r, "ns", mid)
        except EpochMismatch:
            return None
        got = r.get("ns", mid, 100, include_embedding=True)
        assert got is not None, f"{mid} owned but missing"
        return got


def stage_all(a: StateMachine, lb: Log, chunk: int = 7) -> int:
    after, staged = 0, 0
    while True:
        with Reader(a.path) as r:
            page = run_read(r, ReadSpec("range_rows", {"start": C.format_point(START),
                                                       "end": C.format_point(END),
                                                       "after_rowid": after, "limit": chunk}))
        if page["rows"]:
            res = lb(C.range_stage(START, END, MOVE, page["namespaces"], page["rows"]))
            assert res["ok"], res
            staged += res["staged"]
        if page["next"] is None:
            break
        after = page["next"]
    cursor = ""
    while True:
        with Reader(a.path) as r:
            got = run_read(r, ReadSpec("range_requests", {"start": C.format_point(START),
                                                          "end": C.format_point(END),
                                                          "after": cursor, "limit": 3}))
        if got["requests"]:
            assert lb(C.range_stage(START, END, MOVE, [], [], got["requests"]))["ok"]
        if got["next"] is None:
            return staged
        cursor = got["next"]


def test_a_range_moves_with_every_memory_served_by_exactly_one_group(groups: Any) -> None:
    a, b, la, lb = groups
    mids = [m for m in ids() if moving(m)]
    assert len(mids) > 20
    before = {m: serves(a, m) for m in mids}
    assert all(before.values())

    # 1. Freeze on A: writes to the range wait, reads are served, other keys write.
    assert la(C.range_freeze(START, END, MOVE))["changed"]
    assert la(C.range_freeze(START, END, MOVE))["changed"] is False  # again: no-op
    res = la(C.patch("ns", mids[0], {"text": "late"}, None, 30, "r1", None))
    assert res["error"]["code"] == "range_moving"
    stay = next(m for m in ids() if TABLE.group_for("ns", m) == 0 and not moving(m))
    assert la(C.patch("ns", stay, {"text": "fine"}, None, 30, None, None))["ok"]
    assert {m: serves(a, m) for m in mids} == before

    # 2. Stage on B in chunks, twice (a driver that restarted): B serves none of it.
    assert stage_all(a, lb) == len(mids)
    assert stage_all(a, lb, chunk=50) == len(mids)
    assert all(serves(b, m) is None for m in mids)

    # 3. Release on A at table version 2: A forgets the range and its memories.
    res = la(C.range_release(START, END, MOVE, 2))
    assert res["changed"] and res["deleted"] == len(mids)
    assert la(C.range_release(START, END, MOVE, 2))["changed"] is False
    assert all(serves(a, m) is None and serves(b, m) is None for m in mids)  # nobody, briefly

    # 4. Activate on B: every memory exactly as A had it, and only B serves it.
    res = lb(C.range_activate(START, END, MOVE, 2))
    assert res["changed"] and res["activated"] == len(mids)
    assert lb(C.range_activate(START, END, MOVE, 2))["changed"] is False
    assert {m: serves(b, m) for m in mids} == before
    assert all(serves(a, m) is None for m in mids)
    assert b.ownership is not None and b.ownership.version == 2
    # B takes writes for the range now, routed with the new table version.
    ok = lb(C.patch("ns", mids[0], {"text": "after"}, None, 40, None, [2, 1]))
    assert ok["ok"] and ok["memory"]["version"] == before[mids[0]]["version"] + 1
    # ... and finds the moved memories by vector.
    with Reader(b.path) as r:
        vec = np.asarray(memory(mids[1])["embedding"], dtype=np.float32)
        hits = r.search("ns", vec, 300, None, 100)
    assert set(mids) <= {h["memory"]["id"] for h in hits}


def test_a_step_out_of_order_changes_nothing(groups: Any) -> None:
    a, _b, la, lb = groups
    # Release before freeze, activate over a range B owns part of, thaw a range never frozen.
    assert la(C.range_release(START, END, MOVE, 2))["error"]["code"] == "invalid_request"
    assert lb(C.range_activate(RING_SIZE // 2, RING_SIZE, MOVE, 2))["error"]["code"] \
        == "invalid_request"
    assert la(C.range_freeze(START, END, MOVE, frozen=False))["changed"] is False
    # A release must raise the table version.
    la(C.range_freeze(START, END, MOVE))
    # Another move (another target) can neither freeze, release nor thaw it.
    assert la(C.range_freeze(START, END, "other"))["error"]["code"] == "conflict"
    assert la(C.range_release(START, END, "other", 2))["error"]["code"] == "conflict"
    assert la(C.range_freeze(START, END, "other", frozen=False))["error"]["code"] == "conflict"
    assert la(C.range_release(START, END, MOVE, 1))["error"]["code"] == "invalid_request"
    # Staged rows outside the range are refused.
    res = lb(C.range_stage(START, END, MOVE, [], [{
        "ns": "ns", "id": next(m for m in ids() if not moving(m)), "agent_id": "a",
        "text": "x", "metadata": "{}", "tags": "[]", "version": 1, "created_at": 1,
        "updated_at": 1, "expires_at": None, "embedding": C.pack_vector([1.0, 1.0, 1.0])}]))
    assert res["error"]["code"] == "invalid_request"
    # Thaw: writes to the range pass again; nothing moved.
    assert la(C.range_freeze(START, END, MOVE, frozen=False))["changed"]
    mid = next(m for m in ids() if moving(m))
    assert la(C.patch("ns", mid, {"text": "thawed"}, None, 50, None, None))["ok"]
    own = a.ownership
    assert own is not None and own.version == 1
    assert [(r.start, r.end) for r in own.ranges] == [(0, START), (START, END)]
    assert not any(r.frozen for r in own.ranges)


def test_replicas_replaying_the_move_agree(groups: Any, tmp_path: Path) -> None:
    """Every replica of B applies the same entries: same content, same ownership."""
    a, b, la, lb = groups
    la(C.range_freeze(START, END, MOVE))
    stage_all(a, lb)
    la(C.range_release(START, END, MOVE, 2))
    lb(C.range_activate(START, END, MOVE, 2))
    twin = StateMachine(str(tmp_path / "b2.db"), genesis=TABLE.ownership(1))
    for i, payload in enumerate(lb.entries, start=1):
        twin.apply(i, payload)
    with Reader(b.path) as r1, Reader(twin.path) as r2:
        assert r1.digest() == r2.digest()
        assert r1.ownership() == r2.ownership()
    twin.close()


def test_scatter_reads_know_a_moving_range_from_the_records_they_read(groups: Any) -> None:
    """covers_ring_once: the parts of a scatter read must own the ring exactly once."""
    from raftmem.keyspace import covers_ring_once

    a, b, la, lb = groups

    def records() -> list[Any]:
        return [sm.ownership.to_dict() for sm in (a, b)]

    assert covers_ring_once(records())
    la(C.range_freeze(START, END, MOVE))
    assert covers_ring_once(records())  # frozen: still A's
    stage_all(a, lb)
    before = records()
    la(C.range_release(START, END, MOVE, 2))
    assert not covers_ring_once(records())  # owned by nobody
    lb(C.range_activate(START, END, MOVE, 2))
    after = records()
    assert covers_ring_once(after)
    # A read of A before the release and of B after the activation: twice.
    assert not covers_ring_once([before[0], after[1]])
    assert covers_ring_once([None, after[1]])  # a database that checks nothing


def test_dedup_records_move_with_their_keys(groups: Any) -> None:
    """A write acknowledged by A and retried (same request id) after the move is
    answered from its record at B, not applied again; A keeps no record of it."""
    a, b, la, lb = groups
    mids = [m for m in ids() if moving(m)][:4]
    first = [la(C.patch("ns", m, {"text": f"once {m}"}, None, 30, f"rq-{m}", None))
             for m in mids]
    stay = next(m for m in ids() if TABLE.group_for("ns", m) == 0 and not moving(m))
    kept = la(C.patch("ns", stay, {"text": "stays"}, None, 30, "rq-stay", None))
    la(C.range_freeze(START, END, MOVE))
    stage_all(a, lb)
    la(C.range_release(START, END, MOVE, 2))
    lb(C.range_activate(START, END, MOVE, 2))
    for m, res in zip(mids, first, strict=True):
        again = lb(C.patch("ns", m, {"text": f"once {m}"}, None, 60, f"rq-{m}", [2, 1]))
        assert again == res  # the recorded answer: same version, not a second patch
        assert serves(b, m)["version"] == res["memory"]["version"]
    with Reader(a.path) as r, r.transaction():
        left = {row["request_id"] for kind, row, _ in r._records() if kind == "request"}
    assert "rq-stay" in left and not any(f"rq-{m}" in left for m in mids)
    assert la(C.patch("ns", stay, {"text": "stays"}, None, 61, "rq-stay", None)) == kept


def test_a_group_activates_only_a_move_it_staged(groups: Any) -> None:
    """A range released by one move cannot be taken by a group that staged nothing
    for it (another target, or a mistaken request): it would own it empty."""
    a, b, la, lb = groups
    la(C.range_freeze(START, END, MOVE))
    stage_all(a, lb)
    la(C.range_release(START, END, MOVE, 2))
    res = lb(C.range_activate(START, END, "another-move", 2))
    assert res["error"]["code"] == "invalid_request" and "nothing was staged" in \
        res["error"]["message"]
    assert b.ownership is not None and b.ownership.range_for(START) is None
    # The move that staged activates.
    assert lb(C.range_activate(START, END, MOVE, 2))["changed"]
