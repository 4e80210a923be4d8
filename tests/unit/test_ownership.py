"""Epoch checks in the state machine: a group writes only keys it owns, at a current epoch.

Also the pieces around them: the ownership record's codec, the genesis written
at creation (deterministic, restart-safe), ``set_ownership`` through the log,
replay and snapshots, and the router's table rebuilt from the groups' records.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftmem import commands as C
from raftmem.errors import EpochMismatch, ValidationError, from_result_error
from raftmem.keyspace import RING_SIZE, OwnedRange, Ownership, hash_key
from raftmem.placement.routing import Range, RoutingTable, initial_table, merge_ownership
from raftmem.statemachine import Reader, StateMachine

HALF = RING_SIZE // 2
TABLE = initial_table(["n1"], 2, 1)  # g0 owns [0, HALF), g1 owns [HALF, end)
G0, G1 = TABLE.ownership(0), TABLE.ownership(1)


def key_in(group: int, n: int = 1, ns: str = "ns") -> list[str]:
    """``n`` memory ids that the initial table routes to ``group``."""
    out = [f"k{i}" for i in range(10_000) if TABLE.group_for(ns, f"k{i}") == group]
    return out[:n]


def mem(mid: str) -> dict[str, Any]:
    return {"id": mid, "agent_id": "a", "text": mid, "embedding": [1.0, 0.0, 0.0],
            "expires_at": None}


class Log:
    def __init__(self, sm: StateMachine) -> None:
        self.sm = sm
        self.index = sm.applied_index
        self.entries: list[bytes] = []

    def __call__(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        payload = C.encode(cmd)
        self.entries.append(payload)
        return self.sm.apply(self.index, payload)


@pytest.fixture
def g0(tmp_path: Path) -> Iterator[StateMachine]:
    sm = StateMachine(str(tmp_path / "g0.db"), genesis=G0)
    yield sm
    sm.close()


@pytest.fixture
def log(g0: StateMachine) -> Log:
    lg = Log(g0)
    assert lg(C.create_namespace("ns", 3, "cosine", 1, None))["ok"]
    return lg


def refused(res: dict[str, Any]) -> dict[str, Any]:
    assert res["ok"] is False and res["error"]["code"] == "epoch_mismatch", res
    return dict(res["error"])


def content(sm: StateMachine) -> str:
    with Reader(sm.path) as r:
        return r.digest()


# --- the record --------------------------------------------------------------------


def test_ownership_round_trips_and_malformed_records_are_refused() -> None:
    own = Ownership(3, 4, 2, (OwnedRange(0, 10, 1), OwnedRange(10, RING_SIZE, 4)))
    assert Ownership.from_dict(own.to_dict()) == own
    assert own.to_dict()["ranges"][1] == {"start": "000000000000000a", "end": "end", "version": 4}
    bad: list[Any] = [
        None, {}, {"group": 0, "epoch": {"version": 1}, "ranges": []},
        {"group": 0, "epoch": {"version": 1, "conf_ver": 1}, "ranges": [{"start": "0"}]},
        {"group": 0, "epoch": {"version": 1, "conf_ver": 1},
         "ranges": [{"start": "end", "end": "end", "version": 1}]},  # empty range
        {"group": 0, "epoch": {"version": 1, "conf_ver": 1},
         "ranges": [{"start": "0000000000000000", "end": "end", "version": 2}]},  # above
        {"group": 0, "epoch": {"version": 2, "conf_ver": 1},
         "ranges": [{"start": "0000000000000000", "end": "0000000000000010", "version": 1},
                    {"start": "0000000000000008", "end": "end", "version": 1}]},  # overlap
        {"group": True, "epoch": {"version": 1, "conf_ver": 1}, "ranges": []},
    ]
    for d in bad:
        with pytest.raises(ValueError):
            Ownership.from_dict(d)
    with pytest.raises(ValidationError):
        C.set_ownership(Ownership(0, 1, 1, (OwnedRange(5, 5, 1),)))


def test_refusal_rules() -> None:
    own = Ownership(1, 5, 1, (OwnedRange(100, 200, 3),))
    assert own.refusal(150, [3, 0]) is None and own.refusal(150, [9, 9]) is None
    assert own.refusal(150, None) is None
    assert "does not own" in (own.refusal(99, [5, 1]) or "")
    assert "does not own" in (own.refusal(200, None) or "")
    assert "since version 3" in (own.refusal(150, [2, 7]) or "")  # conf_ver is not compared


def test_genesis_is_the_initial_tables_split() -> None:
    assert G0.ranges == (OwnedRange(0, HALF, 1),) and G1.ranges == (OwnedRange(HALF, RING_SIZE, 1),)
    assert G0.epoch == (1, 1)
    # A function of the group count only: other nodes or replica counts, same split.
    assert initial_table(["a", "b", "c"], 2, 3).ownership(1) == G1


# --- checks on apply ----------------------------------------------------------------


def test_owned_writes_apply_and_others_are_refused_without_changing_anything(
    g0: StateMachine, log: Log
) -> None:
    mine, theirs = key_in(0)[0], key_in(1)[0]
    assert log(C.put("ns", mem(mine), 10, "r1", [1, 1]))["ok"]
    before, index = content(g0), g0.applied_index
    err = refused(log(C.put("ns", mem(theirs), 11, "r2", [1, 1])))
    assert err["group"] == 0 and Ownership.from_dict(err["ownership"]) == G0
    assert isinstance(from_result_error(err), EpochMismatch)
    assert from_result_error(err).definite is True
    refused(log(C.patch("ns", theirs, {"text": "x"}, None, 12, "r3", [1, 1])))
    refused(log(C.delete("ns", theirs, None, 13, "r4", [1, 1])))
    refused(log(C.put("ns", mem(theirs), 14, None, None)))  # unrouted: ownership still checked
    assert content(g0) == before
    assert g0.applied_index == index + 4  # refusals are results: the index still advances
    assert log(C.patch("ns", mine, {"text": "y"}, 1, 15, "r5", [1, 1]))["memory"]["version"] == 2
    assert log(C.delete("ns", mine, 2, 16, "r6", [7, 3]))["ok"]


def test_a_batch_with_one_foreign_key_is_refused_whole(g0: StateMachine, log: Log) -> None:
    mine = key_in(0, 3)
    before = content(g0)
    batch = [mem(mine[0]), mem(key_in(1)[0]), mem(mine[1])]
    refused(log(C.put_batch("ns", batch, 10, "b1", [1, 1])))
    assert content(g0) == before
    res = log(C.put_batch("ns", [mem(m) for m in mine], 11, "b2", [1, 1]))
    assert [r["ok"] for r in res["results"]] == [True, True, True]


def test_a_refusal_is_not_recorded_for_dedup(tmp_path: Path) -> None:
    """The router retries with the same request id once the key is routed right."""
    sm = StateMachine(str(tmp_path / "g.db"), genesis=G0)
    lg = Log(sm)
    lg(C.create_namespace("ns", 3, "cosine", 1, None))
    theirs = key_in(1)[0]
    refused(lg(C.put("ns", mem(theirs), 10, "same-rid", [1, 1])))
    # The range moves to this group (version 2); the retry with the same id applies.
    assert lg(C.set_ownership(Ownership(0, 2, 1, (OwnedRange(0, HALF, 1),
                                                  OwnedRange(HALF, RING_SIZE, 2)))))["changed"]
    res = lg(C.put("ns", mem(theirs), 11, "same-rid", [2, 1]))
    assert res["ok"] and res["memory"]["id"] == theirs
    assert lg(C.put("ns", mem(theirs), 12, "same-rid", [2, 1])) == res  # now deduplicated
    sm.close()


def test_a_write_routed_with_an_older_table_than_its_range_is_refused(
    g0: StateMachine, log: Log
) -> None:
    theirs = key_in(1)[0]
    moved = Ownership(0, 3, 2, (OwnedRange(0, HALF, 1), OwnedRange(HALF, RING_SIZE, 3)))
    assert log(C.set_ownership(moved)) == {"ok": True, "changed": True,
                                          "ownership": moved.to_dict()}
    assert g0.ownership == moved
    err = refused(log(C.put("ns", mem(theirs), 10, "s1", [2, 9])))
    assert "since version 3" in err["message"] and err["ownership"] == moved.to_dict()
    assert log(C.put("ns", mem(theirs), 11, "s2", [3, 1]))["ok"]
    # The old half was received at version 1: a version-2 table still routes there correctly.
    assert log(C.put("ns", mem(key_in(0)[0]), 12, "s3", [2, 1]))["ok"]


def test_set_ownership_only_moves_forward(g0: StateMachine, log: Log) -> None:
    newer = Ownership(0, 2, 1, (OwnedRange(0, HALF // 2, 2),))
    assert log(C.set_ownership(newer))["changed"] is True
    assert log(C.set_ownership(newer)) == {"ok": True, "changed": False,
                                          "ownership": newer.to_dict()}
    err = refused(log(C.set_ownership(G0)))  # older
    assert err["ownership"] == newer.to_dict()
    refused(log(C.set_ownership(Ownership(0, 2, 1, ()))))  # same epoch, other content
    res = log(C.set_ownership(Ownership(1, 5, 1, ())))
    assert res["error"]["code"] == "invalid_request" and "group 0" in res["error"]["message"]
    bad = log({"op": "set_ownership", "ownership": {"group": 0}})
    assert bad["error"]["code"] == "invalid_request"
    assert g0.ownership == newer
    with Reader(g0.path) as r:
        assert r.ownership() == newer


def test_a_machine_without_a_record_checks_nothing(tmp_path: Path) -> None:
    sm = StateMachine(str(tmp_path / "plain.db"))
    lg = Log(sm)
    lg(C.create_namespace("ns", 3, "cosine", 1, None))
    assert sm.ownership is None
    assert lg(C.put("ns", mem(key_in(1)[0]), 10, None, [0, 0]))["ok"]
    sm.close()


# --- restart, replay, snapshots ------------------------------------------------------


def test_genesis_is_written_once_and_survives_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "g.db")
    sm = StateMachine(path, genesis=G0)
    lg = Log(sm)
    moved = Ownership(0, 2, 1, (OwnedRange(0, RING_SIZE, 2),))
    lg(C.set_ownership(moved))
    sm.close()
    # Reopened with the same genesis (as every node start does): the change stays.
    sm = StateMachine(path, genesis=G0)
    assert sm.ownership == moved
    # Entries at or below the applied index are skipped on replay: nothing moves back.
    for i, payload in enumerate(lg.entries, 1):
        assert sm.apply(i, payload)["skipped"] is True
    assert sm.ownership == moved
    sm.close()


def test_replay_from_genesis_is_deterministic(tmp_path: Path) -> None:
    mine, theirs = key_in(0, 4), key_in(1, 4)
    cmds = [
        C.create_namespace("ns", 3, "cosine", 1, None),
        C.put("ns", mem(mine[0]), 2, "a", [1, 1]),
        C.put("ns", mem(theirs[0]), 3, "b", [1, 1]),  # refused
        C.set_ownership(Ownership(0, 2, 1, (OwnedRange(0, RING_SIZE, 2),))),
        C.put("ns", mem(theirs[1]), 4, "c", [1, 1]),  # refused: routed before the move
        C.put("ns", mem(theirs[2]), 5, "d", [2, 1]),
        C.put_batch("ns", [mem(mine[1]), mem(theirs[3])], 6, "e", [2, 1]),
        C.set_ownership(Ownership(0, 3, 1, (OwnedRange(0, HALF, 2),))),
        C.delete("ns", theirs[2], None, 7, "f", [3, 1]),  # refused: moved away again
        C.delete("ns", mine[0], None, 8, "g", [3, 1]),
    ]
    payloads = [C.encode(c) for c in cmds]
    runs = []
    for name in ("a", "b"):
        sm = StateMachine(str(tmp_path / f"{name}.db"), genesis=G0)
        results = [sm.apply(i, p) for i, p in enumerate(payloads, 1)]
        runs.append((results, content(sm), sm.ownership))
        sm.close()
    assert runs[0] == runs[1]
    results = runs[0][0]
    assert [r["ok"] for r in results] == [True, True, False, True, False, True, True, True,
                                           False, True]
    # Crash half way, reopen, replay the whole log: same end state.
    path = str(tmp_path / "c.db")
    sm = StateMachine(path, genesis=G0)
    for i, p in enumerate(payloads[:5], 1):
        sm.apply(i, p)
    sm.close()
    sm = StateMachine(path, genesis=G0)
    for i, p in enumerate(payloads, 1):
        sm.apply(i, p)
    assert (content(sm), sm.ownership) == runs[0][1:]
    sm.close()


def test_snapshots_carry_the_record(tmp_path: Path) -> None:
    src = StateMachine(str(tmp_path / "src.db"), genesis=G0)
    lg = Log(src)
    lg(C.create_namespace("ns", 3, "cosine", 1, None))
    moved = Ownership(0, 2, 1, (OwnedRange(0, RING_SIZE, 2),))
    lg(C.set_ownership(moved))
    src.snapshot_to(str(tmp_path / "snap"), b"meta")
    # A new replica of the group starts from genesis, then installs the snapshot.
    dst = StateMachine(str(tmp_path / "dst.db"), genesis=G0)
    assert dst.ownership == G0
    assert dst.install_snapshot(str(tmp_path / "snap")) is True
    assert dst.ownership == moved
    src.close()
    dst.close()


def test_a_snapshot_from_before_ownership_existed_gets_the_genesis(tmp_path: Path) -> None:
    plain = StateMachine(str(tmp_path / "plain.db"))  # no record, as an older version wrote
    Log(plain)(C.create_namespace("ns", 3, "cosine", 1, None))
    plain.snapshot_to(str(tmp_path / "snap"), b"meta")
    plain.close()
    dst = StateMachine(str(tmp_path / "dst.db"), genesis=G1)
    shutil.copy(tmp_path / "snap", tmp_path / "snap2")
    assert dst.install_snapshot(str(tmp_path / "snap2")) is True
    assert dst.ownership == G1
    dst.close()


# --- the router's side -------------------------------------------------------------


def test_merge_ownership_rebuilds_the_table_from_the_groups_records() -> None:
    assert merge_ownership(TABLE, [G0, G1]) == TABLE
    # The upper half moved to g0 at version 2; g1's (stale or current) record is older.
    g0 = Ownership(0, 2, 1, (OwnedRange(0, RING_SIZE, 2),))
    g1_stale = G1
    t = merge_ownership(TABLE, [g0, g1_stale])
    assert t.version == 2 and {r.group for r in t.ranges} == {0}
    assert t.group_for_hash(HALF + 5) == 0
    # g1 gave the range up (owns nothing) and g0's record is not yet seen: the
    # unclaimed span keeps its old group, which will refuse, and the router asks again.
    t = merge_ownership(TABLE, [G0, Ownership(1, 2, 1, ())])
    assert t.group_for_hash(HALF + 5) == 1 and t.version == 2
    # A split: g1 keeps the top quarter, g0 gets the third quarter.
    q3 = HALF + HALF // 2
    t = merge_ownership(TABLE, [
        Ownership(0, 3, 1, (OwnedRange(0, HALF, 1), OwnedRange(HALF, q3, 3))),
        Ownership(1, 3, 1, (OwnedRange(q3, RING_SIZE, 1),)),
    ])
    assert t.ranges == (Range(0, HALF, 0), Range(HALF, q3, 0), Range(q3, RING_SIZE, 1))
    assert t.epoch == (3, 1) and t.replicas == TABLE.replicas


def test_merge_never_leaves_a_hole() -> None:
    t = merge_ownership(RoutingTable((Range(0, RING_SIZE, 0),), {0: ("n1",)}), [])
    assert t.ranges == (Range(0, RING_SIZE, 0),)
    t = merge_ownership(TABLE, [Ownership(1, 4, 1, (OwnedRange(10, 20, 4),))])
    assert t.ranges[0].start == 0 and t.ranges[-1].end == RING_SIZE
    for a, b in zip(t.ranges, t.ranges[1:], strict=False):
        assert a.end == b.start
    assert t.group_for_hash(15) == 1 and t.group_for_hash(25) == 0


def test_hash_is_shared_by_router_and_state_machine() -> None:
    from raftmem.placement import ring

    assert ring.hash_key is hash_key


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_merge_property_every_point_goes_to_its_newest_claim(data: st.DataObject) -> None:
    """Random records over a small ring window: the merged table has no hole and gives
    each point to the claim with the highest range version (else keeps the old group)."""
    n_groups = data.draw(st.integers(1, 4))
    table = initial_table(["n1"], n_groups, 1)
    points = sorted(data.draw(st.sets(st.integers(0, RING_SIZE), min_size=2, max_size=8)))
    records = []
    for g in range(n_groups):
        cuts = sorted(data.draw(st.sets(st.sampled_from(points), max_size=4)))
        ranges = tuple(OwnedRange(a, b, data.draw(st.integers(1, 5)))
                       for a, b in zip(cuts[::2], cuts[1::2], strict=False) if a < b)
        version = max([1, *(r.version for r in ranges)])
        records.append(Ownership(g, version, 1, ranges))
    t = merge_ownership(table, records)
    assert t.ranges[0].start == 0 and t.ranges[-1].end == RING_SIZE
    assert all(a.end == b.start and a.start < a.end for a, b in zip(t.ranges, t.ranges[1:],
                                                                      strict=False))
    probes = {p for p in points if p < RING_SIZE} | {max(p - 1, 0) for p in points}
    for h in probes:
        claims = [(r.version, o.version, o.conf_ver, -o.group) for o in records
                  if (r := o.range_for(h)) is not None]
        if claims:
            assert t.group_for_hash(h) == -max(claims)[3]
        else:
            assert t.group_for_hash(h) == table.group_for_hash(h)
    assert t.version == max([1, *(o.version for o in records)])
