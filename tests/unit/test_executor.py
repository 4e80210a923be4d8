"""The placement executor: transition tables, judging steps from reports, and the real
planner driving an in-memory cluster (with a real PD state machine) to balance.

The fake cluster checks the safety rules at every step and records violations
rather than raising them (the executor would take an exception for a failed
action and retry): a group never has fewer than three voters, never two
membership changes in flight, never loses its leader to a removal, and a
learner is promoted only once caught up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from raftmem.placement import pdstate as P
from raftmem.placement.executor import (
    CANCELLED,
    DONE,
    FAILED,
    STEPS,
    TRANSITIONS,
    ClusterActions,
    Executor,
    ExecutorConfig,
    GroupReport,
    Observation,
    OperatorRun,
    ReplicaReport,
    judge,
    observe,
    transition,
)
from raftmem.placement.planner import Operator, parse_view, replica_counts
from raftmem.placement.routing import place_replicas

CFG = ExecutorConfig(step_timeout=10.0, catch_up_timeout=20.0, action_timeout=1.0)


# --- the transition tables, row by row ------------------------------------------------------

ROWS = [
    # kind, state, event, next state, action
    ("add_learner", "check", "go", "create_learner", "create_learner"),
    ("add_learner", "check", "node_unavailable", FAILED, None),
    ("add_learner", "check", "already_voter", FAILED, None),
    ("add_learner", "create_learner", "hosted", "add_learner", "add_learner"),
    ("add_learner", "add_learner", "learner", "catch_up", None),
    ("add_learner", "catch_up", "caught_up", "record_group", "record_group"),
    ("add_learner", "catch_up", "waiting", "catch_up", None),
    ("add_learner", "record_group", "recorded", DONE, None),
    ("add_learner", "record_group", "refused", FAILED, None),
    ("promote_learner", "catch_up", "caught_up", "promote", "promote"),
    ("promote_learner", "catch_up", "waiting", "catch_up", None),
    ("promote_learner", "catch_up", "already_voter", "record_group", "record_group"),
    ("promote_learner", "promote", "voter", "record_group", "record_group"),
    ("promote_learner", "record_group", "recorded", DONE, None),
    ("remove_replica", "check", "go", "remove_voter", "remove_voter"),
    ("remove_replica", "check", "is_leader", FAILED, None),
    ("remove_replica", "check", "too_few_voters", FAILED, None),
    ("remove_replica", "check", "already_removed", "record_group", "record_group"),
    ("remove_replica", "remove_voter", "removed", "record_group", "record_group"),
    ("remove_replica", "record_group", "recorded", "drop_replica", "drop_replica"),
    ("remove_replica", "drop_replica", "dropped", DONE, None),
    ("transfer_leader", "check", "go", "transfer_leader", "transfer_leader"),
    ("transfer_leader", "check", "already_leader", DONE, None),
    ("transfer_leader", "check", "target_not_voter", FAILED, None),
    ("transfer_leader", "transfer_leader", "moved", DONE, None),
    ("transfer_leader", "transfer_leader", "waiting", "transfer_leader", None),
]


@pytest.mark.parametrize(("kind", "state", "event", "nxt", "action"), ROWS)
def test_transition_table(kind: str, state: str, event: str, nxt: str, action: str | None) -> None:
    assert transition(kind, state, event) == (nxt, action)


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_every_step_waits_fails_on_deadline_and_cancels_on_conf_change(kind: str) -> None:
    for state in STEPS[kind]:
        assert transition(kind, state, "waiting") == (state, None)
        assert transition(kind, state, "deadline") == (FAILED, None)
        assert transition(kind, state, "conf_changed") == (CANCELLED, None)
        assert transition(kind, state, "no_such_event") == (FAILED, None)
    # Every state a transition leads to is a step or an end.
    for nxt, _action in TRANSITIONS[kind].values():
        assert nxt in STEPS[kind] or nxt in (DONE, FAILED, CANCELLED)


@pytest.mark.parametrize(("kind", "events", "actions"), [
    ("add_learner", ["go", "hosted", "learner", "caught_up", "recorded"],
     ["create_learner", "add_learner", None, "record_group", None]),
    ("promote_learner", ["caught_up", "voter", "recorded"], ["promote", "record_group", None]),
    ("remove_replica", ["go", "removed", "recorded", "dropped"],
     ["remove_voter", "record_group", "drop_replica", None]),
    ("transfer_leader", ["go", "moved"], ["transfer_leader", None]),
])
def test_the_happy_path_walks_every_step_in_order(kind: str, events: list[str],
                                                  actions: list[str | None]) -> None:
    state, seen_states, seen_actions = STEPS[kind][0], [], []
    for event in events:
        seen_states.append(state)
        state, action = transition(kind, state, event)
        seen_actions.append(action)
    assert state == DONE
    assert seen_states == list(STEPS[kind])
    assert seen_actions == actions


# --- judging one step from an observation -------------------------------------------------


def report(gid: int, leader: str | None, commit: int, **replicas: tuple[str | None, int]
           ) -> GroupReport:
    """``n1=("voter", 100)``: the leader's role for n1 and its applied/match index."""
    return GroupReport(gid, leader, 3, commit, {
        n: ReplicaReport(role=role, applied_index=idx, match_index=idx if role else 0,
                         member=True)
        for n, (role, idx) in replicas.items()})


def run_at(op: Operator, state: str, conf_ver: int = 1) -> OperatorRun:
    return OperatorRun(1, op, state, conf_ver, started=0.0, started_at=0, step_started=0.0)


VIEW = parse_view("""
    nodes: n1 up, n2 up, n3 up, n4 up, n5 draining
    group | voters   | learners | leader
    0     | n1 n2 n3 | n4       | n1
""")


def test_a_learner_is_caught_up_only_at_the_leaders_commit_index_minus_slack() -> None:
    op = Operator("promote_learner", 0, "n4", 1, "test")
    lagging = Observation(VIEW, {0: report(0, "n1", 100, n1=("voter", 100),
                                           n4=("learner", 99))})
    assert judge(run_at(op, "catch_up"), lagging, 1.0, CFG)[0] == "waiting"
    slack = ExecutorConfig(catch_up_slack=1)
    assert judge(run_at(op, "catch_up"), lagging, 1.0, slack)[0] == "caught_up"
    there = Observation(VIEW, {0: report(0, "n1", 100, n4=("learner", 100))})
    assert judge(run_at(op, "catch_up"), there, 1.0, CFG)[0] == "caught_up"
    # A replica the leader does not list as its learner is never "caught up".
    stranger = Observation(VIEW, {0: report(0, "n1", 100, n4=(None, 100))})
    assert judge(run_at(op, "catch_up"), stranger, 1.0, CFG)[0] == "waiting"


def test_the_leader_is_never_removed() -> None:
    op = Operator("remove_replica", 0, "n1", 1, "test")
    obs = Observation(VIEW, {0: report(0, "n1", 10, n1=("voter", 10), n2=("voter", 10),
                                       n3=("voter", 10), n4=("voter", 10))})
    event, detail = judge(run_at(op, "check"), obs, 1.0, CFG)
    assert event == "is_leader" and detail is not None and "transfer leadership" in detail
    op2 = Operator("remove_replica", 0, "n2", 1, "test")
    assert judge(run_at(op2, "check"), obs, 1.0, CFG)[0] == "go"
    three = Observation(VIEW, {0: report(0, "n1", 10, n1=("voter", 10), n2=("voter", 10),
                                         n3=("voter", 10))})
    assert judge(run_at(op2, "check"), three, 1.0, CFG)[0] == "too_few_voters"


def test_conf_ver_changes_cancel_except_the_operators_own_record() -> None:
    op = Operator("add_learner", 0, "n4", 1, "test")
    moved = parse_view("""
        nodes: n1 up, n2 up, n3 up, n4 up
        group | voters   | learners | leader
        0     | n1 n2 n3 |          | n1
    """)
    moved = replace(moved, groups=(replace(moved.groups[0], learners=("n4",), conf_ver=2),))
    obs = Observation(moved, {0: report(0, "n1", 10, n4=("learner", 10))})
    event, detail = judge(run_at(op, "catch_up"), obs, 1.0, CFG)
    assert event == "conf_changed" and detail is not None and "from 1 to 2" in detail
    mine = run_at(op, "record_group")
    mine.desired = (("n1", "n2", "n3"), ("n4",))
    assert judge(mine, obs, 1.0, CFG)[0] == "recorded"


def test_a_step_past_its_deadline_fails_but_one_that_completes_does_not() -> None:
    op = Operator("transfer_leader", 0, "n1", 1, "test", target="n2")
    obs = Observation(VIEW, {0: report(0, "n1", 10, n1=("voter", 10), n2=("voter", 10))})
    run = run_at(op, "transfer_leader")
    assert judge(run, obs, 9.0, CFG)[0] == "waiting"
    event, detail = judge(run, obs, 11.0, CFG)
    assert event == "deadline" and detail == "step transfer_leader did not complete within 10 s"
    moved = Observation(VIEW, {0: report(0, "n2", 10, n1=("voter", 10), n2=("voter", 10))})
    assert judge(run, moved, 11.0, CFG)[0] == "moved"
    # Catching up has its own, longer deadline.
    catching = run_at(Operator("add_learner", 0, "n4", 1, "t"), "catch_up")
    assert judge(catching, obs, 15.0, CFG)[0] == "waiting"
    assert judge(catching, obs, 21.0, CFG)[0] == "deadline"


def test_no_learner_on_a_node_that_is_not_up() -> None:
    op = Operator("add_learner", 0, "n5", 1, "test")
    assert judge(run_at(op, "check"), Observation(VIEW, {}), 0.0, CFG)[0] == "node_unavailable"


def test_observe_builds_the_planners_view_from_the_pd_and_reports(tmp_path: Path) -> None:
    pd = P.PDState(str(tmp_path / "pd.db"))
    nodes = [{"id": n, "api": f"{n}:1", "raft": f"{n}:2"} for n in ("n1", "n2", "n3", "n4")]
    pd.apply(1, P.encode(P.bootstrap(nodes, {0: ["n1", "n2", "n3"]}, replicas=3, ts=0)))
    pd.apply(2, P.encode(P.set_group(0, ["n1", "n2", "n3"], ["n4"], 1)))
    pd.apply(3, P.encode(P.register_node("n5", "n5:1", "n5:2", ts=0)))
    pd.apply(4, P.encode(P.remove_node("n5")))
    pd.apply(5, P.encode(P.set_node_state("n3", "draining")))
    obs = observe(pd.state(), {0: report(0, "n2", 50, n4=("learner", 50))},
                  live={"n1", "n2", "n3", "n4"} - {"n1"})
    pd.close()
    assert [(n.id, n.state) for n in obs.view.nodes] == [
        ("n1", "down"), ("n2", "up"), ("n3", "draining"), ("n4", "up")]
    g = obs.view.groups[0]
    assert (g.voters, g.learners, g.leader, g.conf_ver, g.caught_up) == (
        ("n1", "n2", "n3"), ("n4",), "n2", 2, ("n4",))
    assert obs.view.replicas == 3


# --- an in-memory cluster -----------------------------------------------------------------


@dataclass
class FakeGroup:
    id: int
    leader: str
    roles: dict[str, str]  # the leader's configuration: node -> voter | learner
    hosted: dict[str, int]  # replicas that exist: node -> applied index
    term: int = 1
    commit: int = 10
    pending: tuple[str, str] | None = None  # a membership entry appended, not yet committed
    transfer_to: str | None = None
    lag: dict[str, int] = field(default_factory=dict)  # learner -> steps before caught up

    def voters(self) -> list[str]:
        return sorted(n for n, r in self.roles.items() if r == "voter")


class FakeCluster(ClusterActions):
    """Groups as dictionaries, the PD as a real PDState; one observe() is one step."""

    def __init__(self, pd_path: Path, nodes: Sequence[str], groups: Mapping[int, Sequence[str]],
                 *, leaders: Mapping[int, str] | None = None, joined: Sequence[str] = (),
                 catch_up_after: int = 3) -> None:
        self.pd = P.PDState(str(pd_path))
        self.pd_index = 0
        addrs = [{"id": n, "api": f"{n}:8080", "raft": f"{n}:9090"} for n in nodes]
        assert self.pd_apply(P.bootstrap(addrs, groups, replicas=3, ts=0))["ok"]
        for n in joined:
            assert self.pd_apply(P.register_node(n, f"{n}:8080", f"{n}:9090", ts=1))["ok"]
        self.groups = {
            gid: FakeGroup(gid, (leaders or {}).get(gid, voters[0]),
                           {n: "voter" for n in voters}, {n: 10 for n in voters})
            for gid, voters in groups.items()}
        self.catch_up_after = catch_up_after
        self.down: set[str] = set()
        self.now = 0.0
        self.steps = 0
        self.stuck: set[tuple[str, int]] = set()  # (action, group): the effect never happens
        self.raise_once: set[str] = set()  # actions that fail the first time they are called
        self.violations: list[str] = []
        self.calls: list[tuple[Any, ...]] = []

    def pd_apply(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.pd_index += 1
        return self.pd.apply(self.pd_index, P.encode(cmd))

    # -- the world moves on ---------------------------------------------------------------

    async def observe(self) -> Observation:
        self.steps += 1
        self.now += 1.0
        for g in self.groups.values():
            if g.pending is not None:
                change, n = g.pending
                if change == "add_learner":
                    g.roles[n] = "learner"
                    g.lag[n] = self.catch_up_after
                elif change == "promote":
                    g.roles[n] = "voter"
                else:
                    g.roles.pop(n, None)
                g.pending = None
            if g.transfer_to is not None and ("transfer_leader", g.id) not in self.stuck:
                g.leader, g.transfer_to = g.transfer_to, None
                g.term += 1
            g.commit += 5
            for n in g.hosted:
                if n in self.down:
                    continue
                role = g.roles.get(n)
                if role == "voter":
                    g.hosted[n] = g.commit
                elif role == "learner":
                    g.lag[n] = max(0, g.lag.get(n, 0) - 1)
                    g.hosted[n] = g.commit if g.lag[n] == 0 else g.commit // 2
        self.check()
        return observe(self.pd.state(), self.reports(),
                       live=set(self.pd.state()["nodes"]) - self.down)

    def reports(self) -> dict[int, GroupReport]:
        out = {}
        for g in self.groups.values():
            nodes = set(g.roles) | set(g.hosted)
            out[g.id] = GroupReport(g.id, g.leader, g.term, g.commit, {
                n: ReplicaReport(role=g.roles.get(n), applied_index=g.hosted.get(n, 0),
                                 match_index=g.hosted.get(n, 0) if n in g.roles else 0,
                                 member=n in g.hosted and n not in self.down)
                for n in nodes})
        return out

    def check(self) -> None:
        for g in self.groups.values():
            if len(g.voters()) < 3:
                self.violations.append(f"step {self.steps}: g{g.id} has voters {g.voters()}")
            if g.roles.get(g.leader) != "voter":
                self.violations.append(f"step {self.steps}: g{g.id} leader {g.leader} not a voter")

    def _change(self, g: FakeGroup, change: str, node: str) -> None:
        if g.pending is not None:
            self.violations.append(f"g{g.id}: {change} {node} while {g.pending} in flight")
        g.pending = (change, node)

    def _call(self, *call: Any) -> None:
        self.calls.append(call)
        if call[0] in self.raise_once:
            self.raise_once.discard(call[0])
            raise ConnectionError(f"{call[0]}: connection reset")

    # -- ClusterActions ----------------------------------------------------------------------

    async def create_learner(self, node: str, group: int, voters: Sequence[str]) -> None:
        self._call("create_learner", node, group)
        if node in self.down:
            raise ConnectionError(f"{node} is down")
        if ("create_learner", group) not in self.stuck:
            self.groups[group].hosted.setdefault(node, 0)

    async def add_learner(self, group: int, node: str) -> None:
        self._call("add_learner", group, node)
        g = self.groups[group]
        if node not in g.hosted:
            raise RuntimeError(f"{node} has no replica of g{group}")
        if node not in g.roles and g.pending != ("add_learner", node):
            self._change(g, "add_learner", node)

    async def promote(self, group: int, node: str) -> None:
        self._call("promote", group, node)
        g = self.groups[group]
        if g.roles.get(node) == "voter" or g.pending == ("promote", node):
            return
        if g.roles.get(node) != "learner":
            raise RuntimeError(f"{node} is not a learner of g{group}")
        if g.hosted[node] < g.commit:
            self.violations.append(f"g{group}: promoted {node} at {g.hosted[node]} < {g.commit}")
        self._change(g, "promote", node)

    async def remove_voter(self, group: int, node: str) -> None:
        self._call("remove_voter", group, node)
        g = self.groups[group]
        if node not in g.roles or g.pending == ("remove", node):
            return
        if node == g.leader:
            self.violations.append(f"g{group}: asked to remove its leader {node}")
        if len(g.voters()) - 1 < 3:
            self.violations.append(f"g{group}: removing {node} leaves {len(g.voters()) - 1}")
        self._change(g, "remove", node)

    async def drop_replica(self, node: str, group: int) -> None:
        self._call("drop_replica", node, group)
        g = self.groups[group]
        pd_group = self.pd.state()["groups"][str(group)]
        if node in g.roles or node in pd_group["voters"] + pd_group["learners"]:
            self.violations.append(f"g{group}: dropped {node} while it is a member")
        g.hosted.pop(node, None)

    async def transfer_leader(self, group: int, node: str) -> None:
        self._call("transfer_leader", group, node)
        g = self.groups[group]
        if g.roles.get(node) != "voter":
            self.violations.append(f"g{group}: transfer to non-voter {node}")
        g.transfer_to = node

    async def record_group(self, group: int, voters: Sequence[str], learners: Sequence[str],
                           expect_conf_ver: int) -> dict[str, Any]:
        self._call("record_group", group, tuple(voters), tuple(learners), expect_conf_ver)
        return self.pd_apply(P.set_group(group, voters, learners, expect_conf_ver))

    # -- the end state -----------------------------------------------------------------------

    def assert_consistent(self) -> None:
        """The PD records what the groups are, and no replica is left behind."""
        pd_groups = self.pd.state()["groups"]
        for g in self.groups.values():
            rec = pd_groups[str(g.id)]
            assert sorted(rec["voters"]) == g.voters(), (g.id, rec, g.roles)
            assert rec["learners"] == [] and "learner" not in g.roles.values()
            assert sorted(g.hosted) == g.voters(), (g.id, g.hosted)


def make_executor(cluster: FakeCluster, config: ExecutorConfig = CFG) -> Executor:
    return Executor(cluster, config, clock=lambda: cluster.now, wall=lambda: 1.7e9 + cluster.now)


async def drive(cluster: FakeCluster, ex: Executor, passes: int = 400) -> int:
    """Passes until one finds nothing to do; the invariants hold after every one."""
    for i in range(1, passes + 1):
        res = await ex.run_once(cluster.observe)
        assert cluster.violations == []
        assert all(sum(1 for r in ex.running() if r.op.group == g) <= 1 for g in cluster.groups)
        if res.balanced:
            return i
    raise AssertionError(f"not balanced after {passes} passes: {ex.progress()}")


def counts(cluster: FakeCluster) -> dict[str, int]:
    c: dict[str, int] = {}
    for g in cluster.groups.values():
        for n in g.voters():
            c[n] = c.get(n, 0) + 1
    return c


# --- the real planner, end to end --------------------------------------------------------


@pytest.mark.parametrize("groups", [4, 8])
def test_a_new_empty_node_is_filled_to_balance(tmp_path: Path, groups: int) -> None:
    three = ["n1", "n2", "n3"]
    cluster = FakeCluster(tmp_path / "pd.db", three, {g: three for g in range(groups)},
                          leaders={g: three[g % 3] for g in range(groups)}, joined=["n4"])
    ex = make_executor(cluster)
    asyncio.run(drive(cluster, ex))

    cluster.assert_consistent()
    c = counts(cluster)
    mean = 3 * groups / 4
    assert set(c) == {"n1", "n2", "n3", "n4"}
    assert all(abs(v - mean) <= 1 for v in c.values()), c
    assert any(g.leader == "n4" for g in cluster.groups.values())
    prog = ex.progress()
    assert prog["counts"][FAILED] == 0 and prog["counts"][CANCELLED] == 0
    assert prog["counts"]["running"] == 0 and prog["balanced"] is True
    kinds = {h["kind"] for h in prog["finished"]}
    assert kinds == {"add_learner", "promote_learner", "remove_replica", "transfer_leader"}
    # The PD's view agrees with the planner: nothing left to do.
    pd_view = asyncio.run(cluster.observe()).view
    assert replica_counts(pd_view)["n4"] == c["n4"]


def test_a_draining_node_is_emptied_and_can_then_be_removed(tmp_path: Path) -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    placed = place_replicas(nodes, 4, 3)
    cluster = FakeCluster(tmp_path / "pd.db", nodes, placed,
                          leaders={g: v[0] for g, v in placed.items()})
    assert any(g.leader == "n2" for g in cluster.groups.values())
    assert cluster.pd_apply(P.set_node_state("n2", "draining"))["ok"]
    refusal = cluster.pd_apply(P.remove_node("n2"))
    assert refusal["error"]["code"] == "node_has_replicas"

    ex = make_executor(cluster)
    asyncio.run(drive(cluster, ex))

    cluster.assert_consistent()
    assert "n2" not in counts(cluster)
    assert all(g.leader != "n2" for g in cluster.groups.values())
    assert all("n2" not in g.hosted for g in cluster.groups.values())
    assert counts(cluster) == {"n1": 4, "n3": 4, "n4": 4}
    assert cluster.pd_apply(P.remove_node("n2"))["changed"] is True
    assert ex.progress()["counts"][FAILED] == 0


def test_an_operator_is_cancelled_when_someone_else_changes_the_group(tmp_path: Path) -> None:
    three = ["n1", "n2", "n3"]
    cluster = FakeCluster(tmp_path / "pd.db", three, {g: three for g in range(4)},
                          leaders={g: three[g % 3] for g in range(4)}, joined=["n4"])
    ex = make_executor(cluster)

    async def scenario() -> None:
        first = await ex.run_once(cluster.observe)
        g0 = next(r for r in first.started if r.op.group == 0)
        assert g0.op.kind == "add_learner" and g0.state == "create_learner"
        # An operator elsewhere (another PD leader, an admin) records group 0.
        rec = cluster.pd.state()["groups"]["0"]
        assert cluster.pd_apply(P.set_group(0, rec["voters"], [], rec["conf_ver"]))["ok"]
        second = await ex.run_once(cluster.observe)
        assert g0 in second.finished and g0.status == CANCELLED
        assert g0.error == "group 0's conf_ver moved from 1 to 2 (not by this operator)"
        # The next plans start again from the new conf_ver and still balance.
        await drive(cluster, ex)

    asyncio.run(scenario())
    cluster.assert_consistent()
    cancelled = ex.progress()["cancelled"]
    assert [(h["kind"], h["group"], h["conf_ver"]) for h in cancelled] == [("add_learner", 0, 1)]


def test_a_step_that_never_completes_fails_at_its_deadline_and_is_retried(
        tmp_path: Path) -> None:
    three = ["n1", "n2", "n3"]
    cluster = FakeCluster(tmp_path / "pd.db", three, {g: three for g in range(3)},
                          leaders={0: "n1", 1: "n1", 2: "n1"})
    cluster.stuck.add(("transfer_leader", 0))
    ex = make_executor(cluster)

    async def scenario() -> None:
        for _ in range(15):
            await ex.run_once(cluster.observe)
        failed = ex.progress()["failed"]
        assert failed and failed[0]["kind"] == "transfer_leader" and failed[0]["group"] == 0
        assert failed[0]["error"] == "step transfer_leader did not complete within 10 s"
        assert failed[0]["step"] == FAILED and failed[0]["step_index"] == 2
        # The next plan tries again.
        assert any(r.op.group == 0 for r in ex.running())
        cluster.stuck.clear()
        await drive(cluster, ex)

    asyncio.run(scenario())
    leaders = sorted(g.leader for g in cluster.groups.values())
    assert leaders == ["n1", "n2", "n3"]


def test_a_remove_of_the_current_leader_is_refused_then_replanned(tmp_path: Path) -> None:
    four = ["n1", "n2", "n3", "n4"]
    cluster = FakeCluster(tmp_path / "pd.db", four, {0: four}, leaders={0: "n4"})
    ex = make_executor(cluster)

    async def scenario() -> None:
        run = ex.submit(Operator("remove_replica", 0, "n4", 1, "by hand"))
        assert run is not None
        assert ex.submit(Operator("transfer_leader", 0, "n4", 1, "busy", target="n1")) is None
        res = await ex.run_once(cluster.observe)
        assert run in res.finished and run.status == FAILED
        assert run.error == "node n4 leads group 0: transfer leadership first"
        assert not [c for c in cluster.calls if c[0] == "remove_voter"]
        await drive(cluster, ex)

    asyncio.run(scenario())
    cluster.assert_consistent()
    assert cluster.groups[0].voters() == ["n1", "n2", "n3"]
    kinds = [h["kind"] for h in ex.progress()["finished"]]
    assert kinds == ["transfer_leader", "remove_replica"]


def test_a_learner_is_promoted_only_after_it_catches_up(tmp_path: Path) -> None:
    three = ["n1", "n2", "n3"]
    cluster = FakeCluster(tmp_path / "pd.db", three, {0: three}, joined=["n4"],
                          catch_up_after=6)
    ex = make_executor(cluster)

    async def scenario() -> None:
        run = ex.submit(Operator("add_learner", 0, "n4", 1, "by hand"))
        assert run is not None
        states = []
        while run.status == "running":
            await ex.run_once(cluster.observe)
            states.append(run.state)
        assert run.status == DONE
        # Each step awaited its own completion: the learner sat in catch_up while it lagged.
        assert states[:4] == ["create_learner", "add_learner", "catch_up", "catch_up"]
        assert states.count("catch_up") >= 5
        rec = cluster.pd.state()["groups"]["0"]
        assert (rec["learners"], rec["conf_ver"]) == (["n4"], 2)
        promote = Operator("promote_learner", 0, "n4", 2, "by hand")
        run = ex.submit(promote)
        assert run is not None
        while run.status == "running":
            await ex.run_once(cluster.observe)
        assert run.status == DONE and cluster.groups[0].roles["n4"] == "voter"
        assert cluster.pd.state()["groups"]["0"]["voters"] == ["n1", "n2", "n3", "n4"]

    asyncio.run(scenario())
    assert cluster.violations == []
    order = [c[0] for c in cluster.calls]
    assert order == ["create_learner", "add_learner", "record_group", "promote", "record_group"]


def test_an_action_that_raises_is_issued_again(tmp_path: Path) -> None:
    three = ["n1", "n2", "n3"]
    cluster = FakeCluster(tmp_path / "pd.db", three, {0: three}, joined=["n4"])
    cluster.raise_once = {"create_learner", "record_group"}
    ex = make_executor(cluster)

    async def scenario() -> OperatorRun:
        run = ex.submit(Operator("add_learner", 0, "n4", 1, "by hand"))
        assert run is not None
        await ex.run_once(cluster.observe)
        assert run.last_error == "create_learner: ConnectionError('create_learner: " \
                                 "connection reset')"
        while run.status == "running":
            await ex.run_once(cluster.observe)
        return run

    run = asyncio.run(scenario())
    assert run.status == DONE
    calls = [c[0] for c in cluster.calls]
    assert calls.count("create_learner") == 2 and calls.count("record_group") == 2
    assert cluster.pd.state()["groups"]["0"]["learners"] == ["n4"]


def test_a_record_whose_answer_was_lost_is_recognised_as_its_own(tmp_path: Path) -> None:
    three = ["n1", "n2", "n3"]
    cluster = FakeCluster(tmp_path / "pd.db", three, {0: three}, joined=["n4"])
    lose = {"record_group"}
    real = cluster.record_group

    async def applied_but_lost(group: int, voters: Sequence[str], learners: Sequence[str],
                               expect_conf_ver: int) -> dict[str, Any]:
        await real(group, voters, learners, expect_conf_ver)
        if lose:
            lose.clear()
            raise TimeoutError("the PD's answer was lost")
        return {"ok": True}

    cluster.record_group = applied_but_lost  # type: ignore[method-assign]
    ex = make_executor(cluster)

    async def scenario() -> OperatorRun:
        run = ex.submit(Operator("add_learner", 0, "n4", 1, "by hand"))
        assert run is not None
        while run.status == "running":
            await ex.run_once(cluster.observe)
        return run

    run = asyncio.run(scenario())
    assert run.status == DONE, run.error
    assert run.conf_ver == 2
    assert cluster.pd.state()["groups"]["0"]["conf_ver"] == 2


# --- progress ---------------------------------------------------------------------------------


def test_progress_reports_steps_history_and_counts(tmp_path: Path) -> None:
    three = ["n1", "n2", "n3"]
    cluster = FakeCluster(tmp_path / "pd.db", three, {g: three for g in range(4)},
                          leaders={g: three[g % 3] for g in range(4)}, joined=["n4"])
    ex = make_executor(cluster, ExecutorConfig(step_timeout=10.0, catch_up_timeout=20.0,
                                               history=3))
    asyncio.run(ex.run_once(cluster.observe))
    prog = ex.progress()
    assert prog["counts"]["running"] == len(prog["running"]) == 3
    adds = [r for r in prog["running"] if r["kind"] == "add_learner"]
    assert [(r["group"], r["node"], r["step"], r["step_index"], r["steps"]) for r in adds] == [
        (0, "n4", "create_learner", 2, 5), (1, "n4", "create_learner", 2, 5),
        (2, "n4", "create_learner", 2, 5)]
    assert adds[0]["started_at"] == int((1.7e9 + 1.0) * 1000)
    assert adds[0]["reason"].startswith("balance replicas")
    for _ in range(20):
        asyncio.run(ex.run_once(cluster.observe))
        prog = ex.progress()
        if prog["finished"]:
            break
    assert prog["finished"] and prog["finished"][0]["elapsed"] >= 1.0
    asyncio.run(drive(cluster, ex))
    prog = ex.progress()
    assert len(prog["finished"]) == 3  # bounded history ...
    assert prog["counts"][DONE] == prog["counts"]["started"] > 3  # ... counts are totals
    assert all(h["step"] == DONE and h["step_index"] == h["steps"] for h in prog["finished"])


def test_until_balanced_reports_every_pass(tmp_path: Path) -> None:
    three = ["n1", "n2", "n3"]
    cluster = FakeCluster(tmp_path / "pd.db", three, {g: three for g in range(4)},
                          leaders={g: three[g % 3] for g in range(4)}, joined=["n4"])
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    ex = Executor(cluster, CFG, clock=lambda: cluster.now, sleep=sleep)
    seen: list[dict[str, Any]] = []
    prog = asyncio.run(ex.until_balanced(cluster.observe, timeout=1000.0,
                                         on_progress=seen.append, interval=0.25))
    assert prog["balanced"] is True and seen[-1] is prog
    assert len(seen) == prog["passes"] == len(slept) + 1
    assert set(slept) == {0.25}
    cluster.assert_consistent()

    # A cluster that cannot settle returns when the time is up, not balanced.
    stuck = FakeCluster(tmp_path / "pd2.db", three, {g: three for g in range(3)},
                        leaders={0: "n1", 1: "n1", 2: "n1"})
    stuck.stuck.add(("transfer_leader", 0))
    ex2 = Executor(stuck, CFG, clock=lambda: stuck.now, sleep=sleep)
    prog = asyncio.run(ex2.until_balanced(stuck.observe, timeout=5.0))
    assert prog["balanced"] is False and prog["counts"]["running"] == 1


def test_operator_ids_are_unique_and_increasing(tmp_path: Path) -> None:
    three = ["n1", "n2", "n3"]
    cluster = FakeCluster(tmp_path / "pd.db", three, {g: three for g in range(4)},
                          leaders={g: three[g % 3] for g in range(4)}, joined=["n4"])
    ex = make_executor(cluster)
    asyncio.run(drive(cluster, ex))
    prog = ex.progress()
    ids = [h["id"] for h in prog["finished"]]  # in the order they finished
    assert sorted(ids) == list(range(1, prog["counts"]["started"] + 1))


# --- groups per node: create_group and move_range --------------------------------------------

RING = 1 << 64


class GrowingCluster(FakeCluster):
    """FakeCluster whose groups own ring ranges (as the PD reads them from the groups'
    records) and that can create groups and move ranges."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        n = len(self.groups)
        self.ranges: dict[int, list[tuple[int, int]]] = {
            g: [(g * RING // n, (g + 1) * RING // n)] for g in sorted(self.groups)}

    async def observe(self) -> Observation:
        obs = await super().observe()
        gpn = self.pd.state()["settings"].get("groups_per_node")
        groups = tuple(replace(g, ranges=tuple(self.ranges[g.id])) if g.id in self.ranges
                       else g for g in obs.view.groups)
        return replace(obs, view=replace(obs.view, groups=groups, groups_per_node=gpn))

    async def create_group(self, group: int, voters: Sequence[str]) -> None:
        self._call("create_group", group, tuple(voters))
        if str(group) not in self.pd.state()["groups"]:
            self.violations.append(f"g{group}: replicas created before the PD recorded it")
        if group not in self.groups:
            self.groups[group] = FakeGroup(group, voters[0], {n: "voter" for n in voters},
                                           {n: 10 for n in voters})
            self.ranges[group] = []

    async def record_new_group(self, group: int, voters: Sequence[str]) -> dict[str, Any]:
        self._call("record_new_group", group, tuple(voters))
        return self.pd_apply(P.create_group(group, voters))

    async def move_range(self, source: int, target: int, start: int, end: int) -> None:
        self._call("move_range", source, target, start, end)
        if target not in self.groups:
            raise RuntimeError(f"no group {target}")
        src = self.ranges[source]
        holder = next((r for r in src if r[0] <= start and end <= r[1]), None)
        if holder is None:
            return  # moved already (an answer lost): nothing to do
        src.remove(holder)
        src += [r for r in ((holder[0], start), (end, holder[1])) if r[0] < r[1]]
        self.ranges[target].append((start, end))

    def shares(self) -> dict[int, float]:
        return {g: sum(e - s for s, e in rs) / RING for g, rs in self.ranges.items()}


def test_a_groups_per_node_target_grows_the_cluster_and_spreads_the_ring(tmp_path: Path) -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    cluster = GrowingCluster(tmp_path / "pd.db", nodes, place_replicas(nodes, 4, 3))
    assert cluster.pd_apply(P.set_groups_per_node(4))["ok"]
    ex = make_executor(cluster)
    asyncio.run(drive(cluster, ex))
    # ceil(4 x 4 / 3) = 6 data groups; every one owns at least half its share.
    assert sorted(cluster.groups) == [0, 1, 2, 3, 4, 5]
    assert min(cluster.shares().values()) >= 0.5 / 6, cluster.shares()
    assert abs(sum(cluster.shares().values()) - 1.0) < 1e-9
    cluster.assert_consistent()
    created = [c for c in cluster.calls if c[0] == "record_new_group"]
    assert [c[1] for c in created] == [4, 5]
    assert len([c for c in cluster.calls if c[0] == "move_range"]) >= 2


def test_a_group_recorded_by_a_pd_leader_that_died_is_created_by_the_next(
    tmp_path: Path
) -> None:
    nodes = ["n1", "n2", "n3"]
    cluster = GrowingCluster(tmp_path / "pd.db", nodes, place_replicas(nodes, 3, 3))
    assert cluster.pd_apply(P.set_groups_per_node(4))["ok"]
    cluster.raise_once.add("create_group")  # the first leader records, then is gone
    first = make_executor(cluster)

    async def until_recorded() -> None:
        for _ in range(20):
            await first.run_once(cluster.observe)
            if "3" in cluster.pd.state()["groups"]:
                return
        raise AssertionError("group 3 was never recorded")

    asyncio.run(until_recorded())
    assert 3 not in cluster.groups  # recorded, never created
    # A new PD leader: a fresh executor, nothing of the first one's state.
    second = make_executor(cluster)
    asyncio.run(drive(cluster, second))
    assert 3 in cluster.groups and sorted(cluster.groups[3].hosted) == \
        sorted(cluster.pd.state()["groups"]["3"]["voters"])
    assert cluster.violations == []
    cluster.assert_consistent()
