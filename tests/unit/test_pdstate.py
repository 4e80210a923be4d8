"""The PD's state machine: every command, refusals that change nothing, CAS on conf_ver,
replay, restart, snapshots, and determinism over random command sequences."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftmem.errors import CorruptionError, ValidationError
from raftmem.placement import pdstate as P

NODES = [{"id": f"n{i}", "api": f"10.0.0.{i}:8080", "raft": f"10.0.0.{i}:9090"}
         for i in (1, 2, 3)]
GROUPS = {0: ["n1", "n2", "n3"], 1: ["n2", "n3", "n1"]}


class Log:
    """A PDState and the next log index, as a Raft group's apply loop would drive it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sm = P.PDState(self.path)
        self.index = self.sm.applied_index

    def apply(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        return self.sm.apply(self.index, P.encode(cmd))

    def reopen(self) -> None:
        self.sm.close()
        self.sm = P.PDState(self.path)


@pytest.fixture
def pd(tmp_path: Path) -> Iterator[Log]:
    log = Log(tmp_path / "pd.db")
    yield log
    log.sm.close()


@pytest.fixture
def booted(pd: Log) -> Log:
    res = pd.apply(P.bootstrap(NODES, GROUPS, replicas=3, ts=1000))
    assert res["ok"] and res["bootstrapped"]
    return pd


def without_index(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != "applied_index"}


def refused(log: Log, cmd: dict[str, Any], code: str) -> dict[str, Any]:
    """Apply ``cmd``, expect the refusal ``code``, and check nothing but the index moved."""
    before = log.sm.state()
    res = log.apply(cmd)
    assert res["ok"] is False, res
    assert res["error"]["code"] == code, res
    assert res["error"]["message"]
    after = log.sm.state()
    assert without_index(after) == without_index(before)
    assert after["applied_index"] == before["applied_index"] + 1
    return res


# --- bootstrap ------------------------------------------------------------------------


def test_bootstrap_creates_nodes_groups_and_settings(booted: Log) -> None:
    s = booted.sm.state()
    assert s["bootstrapped"] is True
    assert s["settings"] == {"replicas": 3, "groups_per_node": None}
    assert s["nodes"]["n2"] == {"id": "n2", "api": "10.0.0.2:8080", "raft": "10.0.0.2:9090",
                                "state": "up", "joined_at": 1000}
    assert s["groups"]["1"] == {"id": 1, "voters": ["n2", "n3", "n1"], "learners": [],
                                "conf_ver": 1}
    assert s["applied_index"] == 1
    orjson.dumps(s)  # JSON-able as it is


def test_a_second_bootstrap_is_a_no_op_answering_the_existing_state(booted: Log) -> None:
    before = booted.sm.state()
    other = [{"id": "x", "api": "a", "raft": "b"}]
    res = booted.apply(P.bootstrap(other, {5: ["x"]}, replicas=1, groups_per_node=4, ts=7))
    assert res["ok"] is True and res["bootstrapped"] is False
    assert res["state"] == without_index(before)
    assert without_index(booted.sm.state()) == without_index(before)


def test_everything_but_bootstrap_is_refused_before_it(pd: Log) -> None:
    for cmd in (P.register_node("n9", "a:1", "a:2", ts=1), P.set_node_state("n1", "draining"),
                P.set_group(0, ["n1"], [], 1), P.remove_node("n1")):
        refused(pd, cmd, "not_bootstrapped")
    assert pd.sm.state()["bootstrapped"] is False


def test_an_invalid_bootstrap_is_refused_and_the_next_valid_one_applies(pd: Log) -> None:
    bad = P.bootstrap(NODES, GROUPS, replicas=3, ts=1)
    bad["groups"][0]["voters"] = ["n1", "n9"]  # a node the bootstrap does not list
    refused(pd, bad, "invalid_request")
    assert pd.apply(P.bootstrap(NODES, GROUPS, replicas=3, ts=1))["bootstrapped"] is True


def test_builders_refuse_bad_values_before_they_reach_the_log() -> None:
    with pytest.raises(ValidationError):
        P.bootstrap(NODES, {0: ["n1", "n1"]}, replicas=3, ts=1)
    with pytest.raises(ValidationError):
        P.bootstrap(NODES + [dict(NODES[0])], GROUPS, replicas=3, ts=1)
    with pytest.raises(ValidationError):
        P.bootstrap(NODES, GROUPS, replicas=0, ts=1)
    with pytest.raises(ValidationError):
        P.register_node("", "a", "b", ts=1)
    with pytest.raises(ValidationError):
        P.set_node_state("n1", "removed")
    with pytest.raises(ValidationError):
        P.set_group(0, ["n1"], ["n1"], 1)
    with pytest.raises(ValidationError):
        P.set_group(0, [], ["n1"], 1)


# --- register_node -----------------------------------------------------------------------


def test_register_node_adds_a_node_and_is_idempotent(booted: Log) -> None:
    res = booted.apply(P.register_node("n4", "10.0.0.4:8080", "10.0.0.4:9090", ts=2000))
    assert res == {"ok": True, "changed": True,
                   "node": {"id": "n4", "api": "10.0.0.4:8080", "raft": "10.0.0.4:9090",
                            "state": "up", "joined_at": 2000}}
    again = booted.apply(P.register_node("n4", "10.0.0.4:8080", "10.0.0.4:9090", ts=3000))
    assert again["ok"] and again["changed"] is False
    assert booted.sm.state()["nodes"]["n4"]["joined_at"] == 2000


def test_register_node_refuses_other_addresses_for_an_existing_node(booted: Log) -> None:
    res = refused(booted, P.register_node("n1", "10.9.9.9:8080", "10.0.0.1:9090", ts=5),
                  "conflict")
    assert "10.0.0.1:8080" in res["error"]["message"]


def test_register_node_refuses_an_address_another_node_uses(booted: Log) -> None:
    refused(booted, P.register_node("n4", "10.0.0.4:8080", "10.0.0.1:9090", ts=5), "conflict")


def test_a_removed_node_registers_again_as_up(booted: Log) -> None:
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    assert booted.apply(P.remove_node("n4"))["changed"] is True
    assert booted.sm.state()["nodes"]["n4"]["state"] == "removed"
    res = booted.apply(P.register_node("n4", "h4b:1", "h4b:2", ts=20))
    assert res["ok"] and res["changed"]
    assert booted.sm.state()["nodes"]["n4"] == {"id": "n4", "api": "h4b:1", "raft": "h4b:2",
                                                "state": "up", "joined_at": 20}


# --- set_node_state ------------------------------------------------------------------------


def test_set_node_state_drains_and_undrains(booted: Log) -> None:
    assert booted.apply(P.set_node_state("n3", "draining"))["changed"] is True
    assert booted.sm.state()["nodes"]["n3"]["state"] == "draining"
    assert booted.apply(P.set_node_state("n3", "draining"))["changed"] is False
    assert booted.apply(P.set_node_state("n3", "up"))["changed"] is True


def test_set_node_state_refusals(booted: Log) -> None:
    refused(booted, P.set_node_state("n9", "draining"), "not_found")
    raw = {"op": "set_node_state", "id": "n1", "state": "removed"}
    refused(booted, raw, "invalid_request")
    refused(booted, {"op": "set_node_state", "id": "n1", "state": "asleep"}, "invalid_request")
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    booted.apply(P.remove_node("n4"))
    refused(booted, P.set_node_state("n4", "up"), "node_removed")


# --- set_group ------------------------------------------------------------------------------


def test_set_group_is_a_compare_and_set_on_conf_ver(booted: Log) -> None:
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    res = booted.apply(P.set_group(0, ["n1", "n2", "n3"], ["n4"], expect_conf_ver=1))
    assert res == {"ok": True, "group": {"id": 0, "voters": ["n1", "n2", "n3"],
                                         "learners": ["n4"], "conf_ver": 2}}
    # The same record again (a retry whose answer was lost) is refused: conf_ver moved.
    res = refused(booted, P.set_group(0, ["n1", "n2", "n3"], ["n4"], expect_conf_ver=1),
                  "conf_ver_mismatch")
    assert res["error"]["group"]["conf_ver"] == 2
    refused(booted, P.set_group(0, ["n1", "n2", "n3", "n4"], [], expect_conf_ver=3),
            "conf_ver_mismatch")
    res = booted.apply(P.set_group(0, ["n1", "n2", "n3", "n4"], [], expect_conf_ver=2))
    assert res["group"]["conf_ver"] == 3
    assert booted.sm.state()["groups"]["1"]["conf_ver"] == 1  # other groups untouched


def test_set_group_refusals(booted: Log) -> None:
    refused(booted, P.set_group(7, ["n1"], [], 1), "not_found")
    refused(booted, P.set_group(0, ["n1", "n2", "n9"], [], 1), "not_found")
    refused(booted, {"op": "set_group", "group": 0, "voters": ["n1"], "learners": ["n1"],
                     "expect_conf_ver": 1}, "invalid_request")
    refused(booted, {"op": "set_group", "group": 0, "voters": "n1", "learners": [],
                     "expect_conf_ver": 1}, "invalid_request")
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    booted.apply(P.set_node_state("n4", "draining"))
    # No new replica on a draining node ...
    refused(booted, P.set_group(0, ["n1", "n2", "n3"], ["n4"], 1), "node_not_up")
    # ... but one it already holds stays while it drains.
    booted.apply(P.set_node_state("n3", "draining"))
    assert booted.apply(P.set_group(0, ["n1", "n3", "n2"], [], 1))["ok"] is True


# --- remove_node -----------------------------------------------------------------------------


def test_remove_node_is_refused_while_it_holds_replicas(booted: Log) -> None:
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    booted.apply(P.set_group(1, ["n2", "n3", "n1"], ["n4"], 1))
    res = refused(booted, P.remove_node("n4"), "node_has_replicas")
    assert res["error"]["groups"] == [1]
    res = refused(booted, P.remove_node("n1"), "node_has_replicas")
    assert res["error"]["groups"] == [0, 1]
    booted.apply(P.set_group(1, ["n2", "n3", "n1"], [], 2))
    assert booted.apply(P.remove_node("n4"))["changed"] is True
    assert booted.apply(P.remove_node("n4"))["changed"] is False  # idempotent
    refused(booted, P.remove_node("n9"), "not_found")
    # A removed node cannot be given replicas.
    refused(booted, P.set_group(1, ["n2", "n3", "n1"], ["n4"], 3), "not_found")


# --- the log contract ----------------------------------------------------------------------------


def test_entries_at_or_below_the_applied_index_are_skipped(booted: Log) -> None:
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    before = booted.sm.state()
    assert booted.sm.apply(2, P.encode(P.remove_node("n4"))) == {"ok": True, "skipped": True}
    assert booted.sm.apply(1, P.encode(P.set_node_state("n1", "draining")))["skipped"]
    assert booted.sm.state() == before


@pytest.mark.parametrize("payload", [
    b"",
    b"\x02{}",
    b"\x01not json",
    b"\x01[1, 2]",
    b"\x01" + orjson.dumps({"op": "explode"}),
    b"\x01" + orjson.dumps({"op": "remove_node"}),  # a key missing
    b"\x01" + orjson.dumps({"op": "remove_node", "id": "n1", "extra": 1}),  # one too many
])
def test_undecodable_payloads_raise_corruption_and_change_nothing(booted: Log,
                                                                  payload: bytes) -> None:
    before = booted.sm.state()
    with pytest.raises(CorruptionError):
        booted.sm.apply(2, payload)
    assert booted.sm.state() == before
    assert booted.sm.applied_index == 1


def test_state_survives_a_restart(booted: Log) -> None:
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    booted.apply(P.set_group(0, ["n1", "n2", "n3"], ["n4"], 1))
    before = booted.sm.state()
    booted.reopen()
    assert booted.sm.state() == before
    assert booted.sm.applied_index == 3
    assert booted.sm.apply(3, P.encode(P.remove_node("n1")))["skipped"]
    assert booted.apply(P.set_node_state("n2", "draining"))["ok"]


def test_a_file_that_is_not_a_pd_database_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = apsw.Connection(str(other))
    conn.execute("CREATE TABLE t(x)")
    conn.close()
    with pytest.raises(CorruptionError):
        P.PDState(str(other))


# --- snapshots ---------------------------------------------------------------------------------


def test_snapshot_round_trip_to_a_fresh_file(booted: Log, tmp_path: Path) -> None:
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    booted.apply(P.set_group(0, ["n1", "n2", "n3"], ["n4"], 1))
    snap = str(tmp_path / "pd.snapshot")
    booted.sm.snapshot_to(snap, b"raft meta \x00\xff")
    assert P.PDState.read_snapshot_meta(snap) == (3, b"raft meta \x00\xff")
    assert {p.name for p in tmp_path.iterdir()} >= {"pd.snapshot"}
    assert not (tmp_path / "pd.snapshot.tmp").exists()

    fresh = Log(tmp_path / "fresh.db")
    assert fresh.sm.install_snapshot(snap) is True
    assert fresh.sm.state() == booted.sm.state()
    assert fresh.sm.applied_index == 3
    # It goes on from there, as the original does.
    fresh.index = 3
    for log in (booted, fresh):
        log.apply(P.set_node_state("n4", "draining"))
    assert fresh.sm.state() == booted.sm.state()
    fresh.reopen()
    assert fresh.sm.state() == booted.sm.state()
    fresh.sm.close()


def test_install_never_moves_the_applied_index_backwards(booted: Log, tmp_path: Path) -> None:
    old = str(tmp_path / "old.snapshot")
    booted.sm.snapshot_to(old, b"old")
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    same = str(tmp_path / "same.snapshot")
    booted.sm.snapshot_to(same, b"same")
    before = booted.sm.state()
    assert booted.sm.install_snapshot(old) is False
    assert booted.sm.install_snapshot(same) is False
    assert booted.sm.state() == before


def test_a_snapshot_that_is_not_ours_is_corruption(booted: Log, tmp_path: Path) -> None:
    with pytest.raises(CorruptionError):
        P.PDState.read_snapshot_meta(str(tmp_path / "missing"))
    junk = tmp_path / "junk"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(CorruptionError):
        booted.sm.install_snapshot(str(junk))
    with pytest.raises(CorruptionError):
        booted.sm.install_snapshot(booted.path)  # a live database has no snapshot meta
    assert booted.sm.applied_index == 1


def test_state_can_be_read_from_another_thread_while_applying(booted: Log) -> None:
    booted.apply(P.register_node("n4", "h4:1", "h4:2", ts=10))
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            s = booted.sm.state()
            # Each read is one consistent state: the group's conf_ver matches its learners.
            g = s["groups"]["0"]
            assert (g["conf_ver"] % 2 == 0) == (g["learners"] == ["n4"])
            seen.append(s["applied_index"])

    t = threading.Thread(target=reader)
    t.start()
    try:
        for ver in range(1, 41):
            learners = ["n4"] if ver % 2 else []
            assert booted.apply(P.set_group(0, ["n1", "n2", "n3"], learners, ver))["ok"]
    finally:
        stop.set()
        t.join()
    assert seen == sorted(seen)


# --- determinism -------------------------------------------------------------------------------

_ids = st.sampled_from(["n1", "n2", "n3", "n4", "n5"])
_addr = st.sampled_from(["h1", "h2", "h3", "h4"])
_members = st.lists(_ids, max_size=4)
_commands = st.one_of(
    st.builds(lambda n, a, b, ts: {"op": "register_node", "id": n, "api": a + ":1",
                                   "raft": b + ":2", "ts": ts},
              _ids, _addr, _addr, st.integers(0, 10**6)),
    st.builds(lambda n, s: {"op": "set_node_state", "id": n, "state": s},
              _ids, st.sampled_from(["up", "draining", "removed", "bogus"])),
    st.builds(lambda g, v, ln, c: {"op": "set_group", "group": g, "voters": v, "learners": ln,
                                   "expect_conf_ver": c},
              st.integers(0, 2), _members, _members, st.integers(0, 4)),
    st.builds(lambda n: {"op": "remove_node", "id": n}, _ids),
    st.builds(lambda r: P.bootstrap(NODES, GROUPS, replicas=r, ts=5), st.integers(1, 3)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=st.lists(_commands, max_size=30), cut=st.integers(0, 30))
def test_random_sequences_give_identical_state_and_replay_changes_nothing(
        cmds: list[dict[str, Any]], cut: int) -> None:
    boot = P.bootstrap(NODES, GROUPS, replicas=3, ts=1)
    payloads = [P.encode(c) for c in [boot, *cmds]]
    with tempfile.TemporaryDirectory() as d:
        a, b = P.PDState(f"{d}/a.db"), P.PDState(f"{d}/b.db")
        results_a = [a.apply(i, p) for i, p in enumerate(payloads, start=1)]
        results_b = [b.apply(i, p) for i, p in enumerate(payloads, start=1)]
        assert results_a == results_b
        assert a.state() == b.state()
        final = a.state()
        # Replaying the whole log after a restart skips every entry.
        a.close()
        a = P.PDState(f"{d}/a.db")
        assert all(a.apply(i, p)["skipped"] for i, p in enumerate(payloads, start=1))
        assert a.state() == final
        # A replica that stopped part-way and replays from the start ends the same.
        c = P.PDState(f"{d}/c.db")
        for i, p in enumerate(payloads[:cut + 1], start=1):
            c.apply(i, p)
        c.close()
        c = P.PDState(f"{d}/c.db")
        for i, p in enumerate(payloads, start=1):
            c.apply(i, p)
        assert c.state() == final
        for sm in (a, b, c):
            sm.close()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=st.sampled_from(sorted(P.REQUIRED_KEYS)), data=st.data())
def test_a_decodable_command_with_bad_values_is_a_refusal_never_a_halt(op: str,
                                                                        data: Any) -> None:
    """Values are checked by apply: whatever a decodable entry holds, the PD answers."""
    valid = {
        "bootstrap": P.bootstrap(NODES, GROUPS, replicas=3, ts=1),
        "register_node": P.register_node("n4", "a:1", "a:2", ts=1),
        "set_node_state": P.set_node_state("n1", "draining"),
        "set_group": P.set_group(0, ["n1", "n2", "n3"], [], 1),
        "remove_node": P.remove_node("n1"),
        "create_group": P.create_group(7, ["n1", "n2", "n3"]),
        "set_groups_per_node": P.set_groups_per_node(2),
        "set_ranges": P.set_ranges(2, [{"start": "0000000000000000", "end": "end", "group": 0,
                                        "version": 1}]),
    }[op]
    cmd = dict(valid)
    for key in data.draw(st.sets(st.sampled_from(sorted(P.REQUIRED_KEYS[op] - {"op"})))):
        cmd[key] = data.draw(_json_values)
    try:
        payload = P.encode(cmd)
    except TypeError:  # orjson refuses integers beyond 64 bits: not a payload anyone sends
        return
    with tempfile.TemporaryDirectory() as d:
        sm = P.PDState(f"{d}/pd.db")
        if op != "bootstrap":
            sm.apply(1, P.encode(P.bootstrap(NODES, GROUPS, replicas=3, ts=1)))
        before = sm.state()
        res = sm.apply(2, payload)
        assert isinstance(res["ok"], bool)
        if not res["ok"]:
            assert without_index(sm.state()) == without_index(before)
        sm.close()



def test_create_group_and_the_groups_per_node_target(tmp_path: Path) -> None:
    sm = P.PDState(str(tmp_path / "pd.db"))
    sm.apply(1, P.encode(P.bootstrap(NODES, GROUPS, replicas=3, ts=1)))
    res = sm.apply(2, P.encode(P.create_group(7, ["n1", "n2", "n3"])))
    assert res["ok"] and res["changed"] and res["group"]["conf_ver"] == 1
    assert sm.state()["groups"]["7"]["voters"] == ["n1", "n2", "n3"]
    again = sm.apply(3, P.encode(P.create_group(7, ["n3", "n2", "n1"])))
    assert again["ok"] and again["changed"] is False
    other = sm.apply(4, P.encode(P.create_group(7, ["n1", "n2"])))
    assert other["error"]["code"] == "conflict"
    sm.apply(5, P.encode(P.set_node_state("n3", "draining")))
    refused = sm.apply(6, P.encode(P.create_group(8, ["n1", "n2", "n3"])))
    assert refused["error"]["code"] == "node_not_up" and "8" not in sm.state()["groups"]
    assert sm.apply(7, P.encode(P.set_groups_per_node(4)))["ok"]
    assert sm.state()["settings"]["groups_per_node"] == 4
    assert sm.apply(8, P.encode(P.set_groups_per_node(None)))["ok"]
    assert sm.state()["settings"]["groups_per_node"] is None
    with pytest.raises(ValidationError):
        P.set_groups_per_node(0)
    sm.close()



def test_the_range_table_is_recorded_only_when_newer_and_whole(tmp_path: Path) -> None:
    sm = P.PDState(str(tmp_path / "pd.db"))
    sm.apply(1, P.encode(P.bootstrap(NODES, GROUPS, replicas=3, ts=1)))
    assert sm.state()["ranges"] == {"version": 0, "ranges": []}
    table = [{"start": "0000000000000000", "end": "8000000000000000", "group": 0, "version": 1},
             {"start": "8000000000000000", "end": "end", "group": 1, "version": 2}]
    assert sm.apply(2, P.encode(P.set_ranges(2, table)))["changed"]
    assert sm.state()["ranges"] == {"version": 2, "ranges": table}
    assert sm.apply(3, P.encode(P.set_ranges(2, table[:1] + [{**table[1], "group": 0}])))[
        "changed"] is False  # not newer: the table stays
    assert sm.state()["ranges"]["ranges"][1]["group"] == 1
    for bad in ([table[1]], table[:1], [table[0], {**table[1], "start": "9000000000000000"}]):
        with pytest.raises(ValidationError):
            P.set_ranges(3, bad)  # not from the start, not to the end, a gap
    sm.close()
