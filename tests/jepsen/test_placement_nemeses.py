"""The membership and rebalance nemeses against a fake cluster (no processes).

The fake keeps a registry like the placement driver's: a drain makes a node
``draining``, and after a few registry reads (the PD moving its replicas) it
holds nothing and is ``removed``; a registration brings a node back ``up``.
It checks the nemeses' promises as they act: never fewer than three nodes up
and registered, never two drains at once, a node stopped only once removed
and out of the clients' rotation with no request in flight.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from jepsen_like.harness.api import Reply
from jepsen_like.harness.cluster import Cluster
from jepsen_like.nemesis.nemeses import Unsupported, build
from jepsen_like.nemesis.placement import (
    MembershipNemesis,
    RebalanceNemesis,
    node_state,
    plan_membership,
)
from jepsen_like.nemesis.schedule import make_schedule

PD = 65000
SLOTS = ["n1", "n2", "n3", "n4"]


class FakePlacement:
    """A PD registry and four node slots; n4 is the spare (not in the cluster file)."""

    def __init__(
        self,
        drain_reads: int = 3,
        removable: bool = True,
        transfer: str = "moves",
        join_exits: bool = False,
        register_refusals: int = 0,
    ) -> None:
        self.node_ids = list(SLOTS)
        self.rids = {s: s for s in SLOTS}
        self.live = {"n1", "n2", "n3"}
        self.ran = {"n1", "n2", "n3"}
        self.serving = {"n1", "n2", "n3"}
        self.reg: dict[str, dict[str, Any]] = {
            s: {"state": "up", "groups": [0, 1, 2, 3, PD]} for s in ("n1", "n2", "n3")
        }
        self.drain_reads = drain_reads
        self.removable = removable
        self.transfer_mode = transfer
        self.join_exits = join_exits
        self.register_refusals = register_refusals
        self.reads_left: dict[str, int] = {}
        self.requests: dict[str, int] = {}
        self.leaders = {0: "n1", 1: "n2", 2: "n3", 3: "n1", PD: "n2"}
        self.log: list[tuple[Any, ...]] = []
        # Two data groups halving the ring; moves that fail this many times first.
        self.ranges_: list[dict[str, Any]] = [
            {"start": "0000000000000000", "end": "8000000000000000", "group": 0},
            {"start": "8000000000000000", "end": "end", "group": 1}]
        self.move_failures = 0

    # -- the promises, checked as the nemeses act --------------------------

    def up_registered(self) -> list[str]:
        return [s for s in SLOTS if s in self.live and self.reg[self.rids[s]]["state"] == "up"]

    # -- PlacementControl ----------------------------------------------------

    def rid(self, slot: str) -> str:
        return self.rids[slot]

    def slot_of(self, rid: str) -> str | None:
        return next((s for s, r in self.rids.items() if r == rid), None)

    def running(self, slot: str) -> bool:
        return slot in self.live

    def alive(self, slot: str) -> bool:
        return slot in self.live

    def has_run(self, slot: str) -> bool:
        return slot in self.ran

    def start_join(self, slot: str, via: str) -> dict[str, Any]:
        assert slot not in self.live and via in self.live
        self.live.add(slot)
        self.ran.add(slot)
        self.log.append(("start_join", slot, self.rids[slot], via))
        if self.join_exits:
            self.live.discard(slot)
        else:
            self.reg[self.rids[slot]] = {"state": "up", "groups": []}
        return {"pid": 1000 + len(self.log), "data_dir": "data-2", "incarnation": 2}

    def stop(self, slot: str) -> dict[str, Any]:
        rid = self.rids[slot]
        if slot in self.live and not self.join_exits:
            assert self.reg[rid]["state"] == "removed", f"{slot} stopped while registered"
            assert slot not in self.serving, f"{slot} stopped while clients use it"
            assert self.requests.get(slot, 0) == 0, f"{slot} stopped with requests in flight"
        self.live.discard(slot)
        self.serving.discard(slot)
        self.log.append(("stop", slot))
        return {"pid": 1, "exit": 0}

    def set_in_service(self, slot: str, serving: bool) -> None:
        (self.serving.add if serving else self.serving.discard)(slot)
        self.log.append(("in_service", slot, serving))

    def inflight(self, slot: str) -> int:
        # the clients' last requests to it finish one per poll
        self.requests[slot] = max(0, self.requests.get(slot, 0) - 1)
        return self.requests[slot]

    async def ready(self, slot: str) -> bool:
        return slot in self.live

    async def registry(self) -> dict[str, dict[str, Any]] | None:
        for rid, left in list(self.reads_left.items()):
            if left <= 1 and self.removable:
                self.reg[rid] = {"state": "removed", "groups": []}
                del self.reads_left[rid]
            elif left > 1:
                self.reads_left[rid] = left - 1
        return {rid: dict(e, id=rid) for rid, e in self.reg.items()}

    async def drain(self, slot: str) -> Reply:
        rid = self.rids[slot]
        draining = [r for r, e in self.reg.items() if e["state"] == "draining"]
        assert not draining, f"drain of {rid} while {draining} drains"
        assert len(self.up_registered()) >= 4, f"drain of {rid} would leave fewer than 3 up"
        self.reg[rid]["state"] = "draining"
        self.reads_left[rid] = self.drain_reads
        self.requests[slot] = 2  # clients still use it meanwhile
        self.log.append(("drain", rid))
        return Reply(200, {"ok": True, "node": {"id": rid, "state": "draining"}})

    async def register(self, slot: str) -> Reply:
        rid = self.rids[slot]
        self.log.append(("register", rid))
        if self.register_refusals:
            # what raftmem's PD answered once: a refusal with HTTP 200
            self.register_refusals -= 1
            error = {"code": "node_removed", "message": f"node {rid} was removed"}
            return Reply(200, {"ok": False, "error": error})
        self.reads_left.pop(rid, None)
        self.reg[rid] = {"state": "up", "groups": [1, 2]}
        return Reply(200, {"ok": True, "node": {"id": rid, "state": "up"}})

    async def operators(self) -> dict[str, Any] | None:
        return {"balanced": True, "running": [], "failed": [{"kind": "add_learner", "group": 0}]}

    async def pd_groups(self) -> dict[int, dict[str, Any]] | None:
        voters = [self.rids[s] for s in ("n1", "n2", "n3")]
        return {g: {"voters": voters, "learners": []} for g in self.leaders}

    async def leader_of(self, group: int) -> str | None:
        return self.leaders.get(group)

    async def transfer(self, group: int, leader: str, target: str) -> Reply:
        assert self.leaders[group] == leader, "a transfer is asked of the group's leader"
        self.log.append(("transfer", group, leader, target))
        if self.transfer_mode == "refused":
            return Reply(200, {"started": False, "reason": "target_behind"})
        if self.transfer_mode == "moves":
            self.leaders[group] = target
        return Reply(200, {"started": True, "reason": None})


    async def ranges(self) -> list[dict[str, Any]] | None:
        return [dict(r) for r in self.ranges_]

    async def move_range(self, start: str, end: str, to_group: int) -> Reply:
        self.log.append(("move_range", start, end, to_group))
        if self.move_failures:
            self.move_failures -= 1
            return Reply(504, {"error": {"code": "commit_timeout", "definite": False}})
        return Reply(200, {"steps": [{"step": "freeze", "seconds": 0.0},
                                     {"step": "activate", "seconds": 0.1, "activated": 7},
                                     {"step": "done", "seconds": 0.1}]})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def membership(control: FakePlacement, **kw: Any) -> MembershipNemesis:
    kw.setdefault("timeout_s", 2.0)
    return MembershipNemesis(control, poll_s=0.0, quiesce_s=2.0, **kw)


def rebalance(control: FakePlacement, **kw: Any) -> RebalanceNemesis:
    kw.setdefault("timeout_s", 2.0)
    return RebalanceNemesis(control, poll_s=0.0, quiesce_s=2.0, **kw)


# --------------------------------------------------------------------------- the plan


def test_the_spare_joins_first_then_a_drawn_node_drains() -> None:
    c = FakePlacement()
    reg = run(c.registry())
    assert plan_membership(c, reg, ["n2", "n4", "n1", "n3"]) == ("join", "n4", "not running")
    c.live.add("n4")
    c.reg["n4"] = {"state": "up", "groups": []}
    action, slot, _ = plan_membership(c, run(c.registry()), ["n2", "n4", "n1", "n3"])
    assert (action, slot) == ("drain", "n2")


def test_no_drain_below_three_nodes_or_beside_another_drain() -> None:
    c = FakePlacement()
    c.live.add("n4")
    c.reg["n4"] = {"state": "draining", "groups": [1]}
    assert plan_membership(c, run(c.registry()), SLOTS)[0] == "none"  # one at a time
    c.reg["n4"] = {"state": "removed", "groups": []}
    action, _, why = plan_membership(c, run(c.registry()), SLOTS)
    assert action == "none" and "3 must stay" in why  # n4 runs but is not registered


def test_a_node_that_ran_before_is_re_added() -> None:
    c = FakePlacement()
    c.live.discard("n2")
    assert plan_membership(c, run(c.registry()), ["n2", "n1"])[:2] == ("re-add", "n2")


# --------------------------------------------------------------------------- membership


def test_membership_cycles_join_drain_re_add_and_keeps_its_promises() -> None:
    c = FakePlacement()
    n = membership(c)
    assert run(n.setup())["spare"] == ["n4"]
    rng = random.Random(5)
    done = []
    for _ in range(8):
        order = rng.sample(SLOTS, len(SLOTS))
        inject = run(n.inject({"order": order}))
        heal = run(n.heal())
        done.append((inject["action"], inject.get("id"), heal.get("outcome")))
        assert len(c.up_registered()) >= 3
        assert not [r for r, e in c.reg.items() if e["state"] == "draining"]
    actions = [a for a, _, _ in done]
    assert actions == ["join", "drain", "re-add", "drain", "re-add", "drain", "re-add", "drain"]
    for action, _, outcome in done:
        if action == "drain":
            assert outcome == "removed and stopped"
    summary = n.summary()
    assert summary["joins"] == 1 and summary["re_adds"] == 3 and summary["drains"] == 4
    assert summary["failures"] == []
    # every drained node left the clients' rotation before it was stopped
    for k, entry in enumerate(c.log):
        if entry[0] == "stop":
            assert ("in_service", entry[1], False) in c.log[:k]


def test_a_re_added_node_of_the_cluster_file_joins_under_its_own_id() -> None:
    c = FakePlacement()
    n = membership(c)
    run(n.inject({"order": ["n4"]}))  # join n4
    run(n.inject({"order": ["n1", "n2", "n3", "n4"]}))  # drain n1
    assert run(n.heal())["outcome"] == "removed and stopped"
    again = run(n.inject({"order": ["n1"]}))
    assert (again["action"], again["node"], again["id"]) == ("re-add", "n1", "n1")
    assert again["outcome"] == "up" and c.reg["n1"]["state"] == "up"
    assert [e[:3] for e in c.log if e[0] == "start_join"][-1] == ("start_join", "n1", "n1")
    assert "n1" in c.serving


def test_a_drain_the_pd_does_not_finish_is_reported_and_cancelled() -> None:
    c = FakePlacement(removable=False)
    n = membership(c, timeout_s=0.05)
    run(n.inject({"order": ["n4"]}))
    inject = run(n.inject({"order": ["n3", "n1"]}))
    assert (inject["action"], inject["outcome"]) == ("drain", "draining")
    heal = run(n.heal())
    assert heal["outcome"].startswith("drain not finished within")
    assert heal["still_holds"] == [0, 1, 2, 3, PD] and heal["state"] == "draining"
    assert heal["failed_operators"] == [{"kind": "add_learner", "group": 0}]
    assert heal["register_answers"][0]["status"] == 200 and heal["register_attempts"] == 1
    assert c.reg["n3"]["state"] == "up" and "n3" in c.live  # cancelled, still running
    assert heal["registry"]["n3"] == "up"
    assert n.summary()["drain_timeouts"] == 1 and len(n.summary()["failures"]) == 1


def test_a_join_whose_process_exits_is_reported_and_cleaned_up() -> None:
    c = FakePlacement(join_exits=True)
    n = membership(c)
    info = run(n.inject({"order": ["n4"]}))
    assert info["outcome"].startswith("failed: the process exited")
    assert "n4" not in c.live and "n4" not in c.serving
    assert n.summary()["failures"]


def test_the_last_heal_leaves_no_drain_behind() -> None:
    c = FakePlacement()
    n = membership(c)
    run(n.inject({"order": ["n4"]}))
    run(n.inject({"order": ["n2"]}))  # the chaos phase ends during this drain
    assert c.reg["n2"]["state"] == "draining"
    heal = run(n.heal())
    assert heal["registry"]["n2"] == "removed" and "n2" not in c.live
    assert all(c.reg[c.rids[s]]["state"] == "up" for s in c.live)
    assert run(n.heal())["action"] == "none"  # idempotent


def test_membership_needs_a_spare_slot() -> None:
    c = FakePlacement()
    c.live.add("n4")
    c.reg["n4"] = {"state": "up", "groups": []}
    with pytest.raises(Unsupported, match="spare"):
        run(membership(c).setup())


# --------------------------------------------------------------------------- rebalance


def test_rebalance_setup_joins_the_spare() -> None:
    c = FakePlacement()
    setup = run(rebalance(c).setup())
    assert setup["joined"][0]["node"] == "n4" and setup["balanced"] is True
    assert "n4" in c.live and "n4" in c.serving


def test_a_transfer_asks_the_leader_for_another_voter_and_waits_for_it() -> None:
    c = FakePlacement()
    n = rebalance(c)
    run(n.setup())
    info = run(n.inject({"action": "transfer", "pick": 4, "order": ["n2", "n3", "n1", "n4"]}))
    # pick 4 of groups [0, 1, 2, 3, 65000] is the PD's group, led by n2: n3 is next
    assert (info["group"], info["from"], info["to"]) == (PD, "n2", "n3")
    assert info["outcome"] == f"n3 leads g{PD}" and c.leaders[PD] == "n3"
    assert ("transfer", PD, "n2", "n3") in c.log
    assert n.summary()["transfers"] == 1


def test_a_transfer_that_is_refused_or_never_happens_is_reported() -> None:
    c = FakePlacement(transfer="refused")
    n = rebalance(c)
    info = run(n.inject({"action": "transfer", "pick": 0, "order": SLOTS}))
    assert info["outcome"] == "not started: target_behind"
    c.transfer_mode = "lost"
    n.timeout_s = 0.05
    info = run(n.inject({"action": "transfer", "pick": 0, "order": SLOTS}))
    assert info["outcome"].startswith("started, but n2 did not lead g0")
    assert info["leader_now"] == "n1"
    summary = n.summary()
    assert summary["transfers_not_started"] == 1 and summary["transfer_timeouts"] == 1


def test_rebalance_drains_then_registers_the_running_node_again() -> None:
    c = FakePlacement()
    n = rebalance(c)
    run(n.setup())
    inject = run(n.inject({"action": "drain", "pick": 0, "order": ["n3", "n1", "n2", "n4"]}))
    assert (inject["action"], inject["id"], inject["outcome"]) == ("drain", "n3", "draining")
    heal = run(n.heal())
    assert heal["action"] == "re-register" and heal["state_when_empty"] == "removed"
    assert heal["outcome"] == "up, holds [1, 2]"
    assert c.log[-1] == ("register", "n3") and "n3" in c.live  # never stopped
    assert [e for e in c.log if e[0] == "stop"] == []
    summary = n.summary()
    assert (summary["drains"], summary["re_registers"], summary["replicas_back"]) == (1, 1, 1)


def test_a_re_registration_refused_with_http_200_is_counted_and_sent_again() -> None:
    c = FakePlacement(register_refusals=1)
    n = rebalance(c)
    run(n.setup())
    run(n.inject({"action": "drain", "pick": 0, "order": ["n2", "n1", "n3", "n4"]}))
    heal = run(n.heal())
    assert heal["outcome"] == "up, holds [1, 2]"
    assert heal["register_attempts"] == 2
    assert heal["register_answers"][0]["body"]["error"]["code"] == "node_removed"
    assert n.summary()["register_refusals"] == 1
    assert [e for e in c.log if e[0] == "register"] == [("register", "n2")] * 2


def test_a_range_move_takes_half_a_range_to_another_group() -> None:
    c = FakePlacement()
    n = rebalance(c)
    run(n.setup())
    # pick 3: the second range (odd: its upper half), to the only other group.
    info = run(n.inject({"action": "move_range", "pick": 3, "order": SLOTS}))
    assert (info["from"], info["to"], info["start"], info["end"]) == (
        1, 0, "c000000000000000", "end")
    assert info["memories"] == 7 and info["outcome"] == "g1 -> g0"
    info = run(n.inject({"action": "move_range", "pick": 0, "order": SLOTS}))
    assert (info["start"], info["end"], info["to"]) == ("0000000000000000", "4000000000000000", 1)
    assert n.summary()["range_moves"] == 2


def test_a_range_move_cut_short_is_finished_at_the_heal() -> None:
    c = FakePlacement()
    c.move_failures = 2  # the inject's request and the heal's first one fail
    n = rebalance(c)
    run(n.setup())
    info = run(n.inject({"action": "move_range", "pick": 0, "order": SLOTS}))
    assert info["outcome"].startswith("not done")
    heal = run(n.heal())
    assert heal["action"] == "finish_move" and heal["outcome"].startswith("finished")
    moves = [e for e in c.log if e[0] == "move_range"]
    assert moves == [("move_range", "0000000000000000", "4000000000000000", 1)] * 3
    summary = n.summary()
    assert summary["range_moves_not_done"] == 1 and summary["range_moves_finished_at_heal"] == 1
    assert run(n.heal())["action"] == "none"


def test_rebalance_heal_without_a_pending_drain_reports_the_registry() -> None:
    c = FakePlacement()
    n = rebalance(c)
    run(n.setup())
    heal = run(n.heal())
    assert heal["action"] == "none" and set(heal["registry"].values()) == {"up"}


# --------------------------------------------------------------------------- schedule and wiring


def test_rebalance_faults_draw_transfers_and_drains() -> None:
    faults = make_schedule(9, ["rebalance"], 600, SLOTS, 4)
    assert {f.params["action"] for f in faults} == {"transfer", "drain", "move_range"}
    assert all(sorted(f.params["order"]) == SLOTS for f in faults)
    again = make_schedule(9, ["rebalance"], 600, SLOTS, 4)
    assert faults == again


def test_build_makes_the_placement_nemeses() -> None:
    c = FakePlacement()
    n = build("membership", c, placement_timeout_s=7.0, quiesce_s=3.0)
    assert isinstance(n, MembershipNemesis) and n.timeout_s == 7.0 and n.quiesce_s == 3.0
    assert isinstance(build("rebalance", c), RebalanceNemesis)


def test_node_state_of_an_unknown_node_is_absent() -> None:
    assert node_state({"n1": {"state": "up"}}, "n9") == "absent"
    assert node_state(None, "n1") == "absent"


# --------------------------------------------------------------------------- the harness side


def test_clients_follow_the_nodes_in_service(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "nodes", 3, spares=1)
    assert cluster.node_ids == SLOTS and cluster.active_ids == ["n1", "n2", "n3"]
    # client 3's own slot is the spare: until it serves, client 3 uses another node
    assert [cluster.target_for(i).id for i in range(6)] == ["n1", "n2", "n3", "n1", "n1", "n2"]
    cluster.set_in_service("n4", True)
    cluster.set_in_service("n2", False)
    assert [cluster.target_for(i).id for i in range(6)] == ["n1", "n3", "n3", "n4", "n1", "n4"]
    # session reads rotate over the nodes in service only
    assert {cluster.target_for(0, turn).id for turn in range(1, 7)} == {"n1", "n3", "n4"}


def test_node_commands_for_a_join_a_restart_and_a_re_add(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "nodes", 3, spares=1)
    n1, n4 = cluster.node("n1"), cluster.node("n4")
    assert "--cluster" in cluster.command(n1) and n1.data.name == "data"
    n4.joined, n4.join_url = True, n1.url
    cmd = cluster.command(n4)
    join = cmd[cmd.index("--join") :]
    assert join[:8] == ["--join", n1.url, "--id", "n4", "--api", n4.api, "--raft", n4.raft]
    assert cmd[cmd.index("--secret-file") + 1] == str(cluster.secret_file)
    n4.data.mkdir(parents=True)
    (n4.data / "join.json").write_text("{}")
    restart = cluster.command(n4)  # a joined node restarts from its data dir
    assert "--join" not in restart and restart[restart.index("--data-dir") + 1] == str(n4.data)
    # a node of the cluster file that comes back: fresh data dir, its own id (no process here)
    n1.starts, n1.joined, n1.join_url, n1.incarnation = 1, True, n4.url, 2
    cmd = cluster.command(n1)
    assert cmd[cmd.index("--id") + 1] == "n1" and n1.data.name == "data-2"
    assert "--join" in cmd and "--cluster" not in cmd
    assert cmd[cmd.index("--data-dir") + 1].endswith("data-2")
