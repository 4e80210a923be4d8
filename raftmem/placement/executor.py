"""The placement executor: runs the planner's operators one safe step at a time. Pure.

The planner (``planner.py``) says *what* should change; the executor makes it
happen through an abstract :class:`ClusterActions` (the node implements it over
its Raft host and HTTP) and judges every step from reported state — a
:class:`GroupReport` per group, read afresh each pass — never from an action
having returned. No sockets or threads here: everything is asyncio and the
clock is injected, so tests drive it against an in-memory cluster.

Rules:

* One operator per group at a time (and so at most one membership change in
  flight per group); at most ``max_running`` operators in all.
* A learner is promoted only once it has caught up: its applied/match index is
  at least the leader's commit index at the time of the check, minus
  ``catch_up_slack`` (0 by default).
* The leader of a group is never removed: a ``remove_replica`` of the current
  leader fails at once ("transfer leadership first"), and the next plan moves
  the leadership (the planner emits ``transfer_leader`` for it). The executor
  also refuses a removal that would leave fewer voters than the replica target.
* An operator is **cancelled** when the group's ``conf_ver`` in the PD moves
  past the one it was planned against, except by the operator's own
  ``record_group`` (a compare-and-set through the PD log).
* Every step has a deadline; a stuck step **fails** the operator with a reason,
  and the next plan retries. An action that raises is issued again at the next
  pass (actions must be idempotent).

Operators are composite; each is an explicit transition table
``(state, event) -> (next state, action)`` (:data:`TRANSITIONS`), where a state
names the step whose completion is awaited:

``add_learner``      check -> create_learner -> add_learner -> catch_up -> record_group
``promote_learner``  catch_up -> promote -> record_group
``remove_replica``   check -> remove_voter -> record_group -> drop_replica
``transfer_leader``  check -> transfer_leader

Each pass (:meth:`Executor.run_once`) reads one :class:`Observation`, advances
every running operator by what it shows, then plans on the view with the
running operators' effects applied (so the planner does not plan them again)
and starts operators for idle groups.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog

from raftmem.placement.planner import ClusterView, GroupInfo, NodeInfo, Operator, plan, settled

log = structlog.get_logger("raftmem.placement")

VOTER = "voter"
LEARNER = "learner"

DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = (DONE, FAILED, CANCELLED)


# --- reported state --------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaReport:
    """One node's replica of one group, as reported.

    ``role`` is the leader's configuration (``voter``, ``learner``, or None: not
    a member); ``match_index`` is the leader's match index for it; ``applied_index``
    and ``member`` come from the node itself (it hosts a replica of the group
    and believes it belongs to it).
    """

    role: str | None = None
    applied_index: int = 0
    match_index: int = 0
    member: bool = False

    @property
    def progress(self) -> int:
        return max(self.applied_index, self.match_index)


@dataclass(frozen=True)
class GroupReport:
    group: int
    leader: str | None
    term: int
    commit_index: int
    replicas: Mapping[str, ReplicaReport] = field(default_factory=dict)

    def replica(self, node: str) -> ReplicaReport:
        return self.replicas.get(node, ReplicaReport())

    def role(self, node: str) -> str | None:
        return self.replica(node).role

    def voters(self) -> list[str]:
        return sorted(n for n, r in self.replicas.items() if r.role == VOTER)

    def caught_up(self, node: str, slack: int = 0) -> bool:
        """``node``'s replica has reached the leader's commit index (minus ``slack``)."""
        return self.replica(node).progress >= self.commit_index - slack


@dataclass(frozen=True)
class Observation:
    """What one pass sees: the planner's view (membership and ``conf_ver`` from the
    PD, leaders and caught-up learners from reports) and the reports themselves."""

    view: ClusterView
    reports: Mapping[int, GroupReport]

    def group(self, gid: int) -> GroupInfo | None:
        return next((g for g in self.view.groups if g.id == gid), None)


def observe(
    pd_state: Mapping[str, Any],
    reports: Mapping[int, GroupReport],
    *,
    live: Collection[str] | None = None,
    slack: int = 0,
) -> Observation:
    """An :class:`Observation` from the PD's ``PDState.state()`` and the groups' reports.

    A node ``up`` in the PD but not in ``live`` (when given) is ``down`` to the
    planner; removed nodes are left out; a learner is caught up when its report
    says so (with ``slack``).
    """
    nodes = []
    for nid, node in sorted(pd_state.get("nodes", {}).items()):
        state = node["state"]
        if state == "removed":
            continue
        if state == "up" and live is not None and nid not in live:
            state = "down"
        nodes.append(NodeInfo(nid, state))
    groups = []
    for g in sorted(pd_state.get("groups", {}).values(), key=lambda g: int(g["id"])):
        gid = int(g["id"])
        rep = reports.get(gid)
        learners = tuple(g["learners"])
        groups.append(GroupInfo(
            gid, tuple(g["voters"]), learners,
            leader=rep.leader if rep is not None else None,
            conf_ver=int(g["conf_ver"]),
            caught_up=tuple(n for n in learners
                            if rep is not None and rep.role(n) == LEARNER
                            and rep.caught_up(n, slack)),
            hosted=rep is not None and any(rep.replica(n).member for n in g["voters"]),
        ))
    replicas = pd_state.get("settings", {}).get("replicas") or 3
    return Observation(ClusterView(tuple(nodes), tuple(groups), int(replicas)), dict(reports))


# --- what the executor asks of the cluster -------------------------------------------


class ClusterActions(Protocol):
    """The cluster operations an executor drives. Each starts something and returns;
    the executor judges completion from reports. All must be idempotent (a
    step may be issued again after an error or a lost answer)."""

    async def create_learner(self, node: str, group: int, voters: Sequence[str]) -> None:
        """``node`` starts a non-voting replica of ``group`` that catches up from ``voters``."""

    async def add_learner(self, group: int, node: str) -> None:
        """The group's leader starts replicating to ``node`` (a learner)."""

    async def promote(self, group: int, node: str) -> None:
        """The leader appends the membership entry making learner ``node`` a voter."""

    async def remove_voter(self, group: int, node: str) -> None:
        """The leader appends the membership entry removing voter ``node``."""

    async def drop_replica(self, node: str, group: int) -> None:
        """``node`` stops and deletes its replica of ``group``."""

    async def transfer_leader(self, group: int, node: str) -> None:
        """The group's leader hands leadership to voter ``node``."""

    async def record_group(
        self, group: int, voters: Sequence[str], learners: Sequence[str], expect_conf_ver: int
    ) -> Mapping[str, Any]:
        """``set_group`` through the PD log (applies only at ``expect_conf_ver``); the PD's result."""
        ...

    async def create_group(self, group: int, voters: Sequence[str]) -> None:
        """Each of ``voters`` starts a voting replica of the new, empty ``group``."""

    async def record_new_group(self, group: int, voters: Sequence[str]) -> Mapping[str, Any]:
        """``create_group`` through the PD log; the PD's result."""
        ...

    async def move_range(self, source: int, target: int, start: int, end: int) -> None:
        """Move (or finish moving) ``[start, end)`` from ``source`` to ``target``
        (raftmem/rangemove.py); returns when the move is done."""


ViewProvider = Callable[[], Awaitable[Observation]]


# --- the operators as transition tables ------------------------------------------------

STEPS: dict[str, tuple[str, ...]] = {
    "add_learner": ("check", "create_learner", "add_learner", "catch_up", "record_group"),
    "promote_learner": ("catch_up", "promote", "record_group"),
    "remove_replica": ("check", "remove_voter", "record_group", "drop_replica"),
    "transfer_leader": ("check", "transfer_leader"),
    "create_group": ("check", "record", "create", "elect"),
    "move_range": ("check", "move"),
}

Transition = tuple[str, str | None]  # (next state, action issued on entering it)

_SPECIFIC: dict[str, dict[tuple[str, str], Transition]] = {
    "add_learner": {
        ("check", "go"): ("create_learner", "create_learner"),
        ("check", "node_unavailable"): (FAILED, None),
        ("check", "already_voter"): (FAILED, None),
        ("create_learner", "hosted"): ("add_learner", "add_learner"),
        ("add_learner", "learner"): ("catch_up", None),
        ("catch_up", "caught_up"): ("record_group", "record_group"),
        ("record_group", "recorded"): (DONE, None),
    },
    "promote_learner": {
        ("catch_up", "caught_up"): ("promote", "promote"),
        ("catch_up", "already_voter"): ("record_group", "record_group"),
        ("promote", "voter"): ("record_group", "record_group"),
        ("record_group", "recorded"): (DONE, None),
    },
    "remove_replica": {
        ("check", "go"): ("remove_voter", "remove_voter"),
        ("check", "is_leader"): (FAILED, None),
        ("check", "too_few_voters"): (FAILED, None),
        ("check", "already_removed"): ("record_group", "record_group"),
        ("remove_voter", "removed"): ("record_group", "record_group"),
        ("record_group", "recorded"): ("drop_replica", "drop_replica"),
        ("drop_replica", "dropped"): (DONE, None),
    },
    "transfer_leader": {
        ("check", "go"): ("transfer_leader", "transfer_leader"),
        ("check", "already_leader"): (DONE, None),
        ("check", "target_not_voter"): (FAILED, None),
        ("transfer_leader", "moved"): (DONE, None),
    },
    "create_group": {
        # Recorded first: a PD leader that takes over finds the group and its
        # voters in the PD state and finishes creating its replicas.
        ("check", "go"): ("record", "record_new_group"),
        ("check", "recorded"): ("create", "create_group"),
        ("check", "exists"): (FAILED, None),
        ("record", "recorded"): ("create", "create_group"),
        ("create", "hosted"): ("elect", None),
        ("elect", "elected"): (DONE, None),
    },
    "move_range": {
        ("check", "go"): ("move", "move_range"),
        ("check", "moved"): (DONE, None),
        ("check", "not_owned"): (FAILED, None),
        ("move", "moved"): (DONE, None),
    },
}


def _build_tables() -> dict[str, dict[tuple[str, str], Transition]]:
    tables = {}
    for kind, steps in STEPS.items():
        table = dict(_SPECIFIC[kind])
        for state in steps:
            # Events every step shares: not yet, too late, someone else changed the group.
            table[(state, "waiting")] = (state, None)
            table[(state, "deadline")] = (FAILED, None)
            table[(state, "conf_changed")] = (CANCELLED, None)
        if "record_group" in steps:
            # The PD refused the record for another reason than a conf_ver race.
            table[("record_group", "refused")] = (FAILED, None)
        tables[kind] = table
    return tables


TRANSITIONS: dict[str, dict[tuple[str, str], Transition]] = _build_tables()


def transition(kind: str, state: str, event: str) -> Transition:
    """The table's answer; an event the table does not know fails the operator."""
    return TRANSITIONS[kind].get((state, event), (FAILED, None))


# --- configuration and the state of one operator ------------------------------------------


@dataclass(frozen=True)
class ExecutorConfig:
    step_timeout: float = 60.0  # seconds any step may take ...
    catch_up_timeout: float = 600.0  # ... except a learner catching up (a snapshot to copy)
    action_timeout: float = 10.0  # one ClusterActions call
    catch_up_slack: int = 0  # entries a learner may lag the leader's commit index
    max_running: int = 16
    history: int = 100  # finished operators kept for progress()

    def timeout(self, state: str) -> float:
        return self.catch_up_timeout if state == "catch_up" else self.step_timeout


@dataclass
class OperatorRun:
    """One operator in flight (or finished): its state and what it has seen."""

    id: int
    op: Operator
    state: str
    conf_ver: int  # the group's conf_ver it expects: planned, plus its own records
    started: float  # executor clock
    started_at: int  # wall clock, ms
    step_started: float
    status: str = "running"  # running | done | failed | cancelled
    finished: float | None = None
    error: str | None = None  # why it failed or was cancelled
    last_error: str | None = None  # the last action that raised, or the PD's refusal
    refusal: dict[str, Any] | None = None  # the PD's last refusal of record_group
    pending_action: str | None = None  # an action that raised: issued again next pass
    attempts: int = 0  # actions issued
    desired: tuple[tuple[str, ...], tuple[str, ...]] | None = None  # record_group's (voters, learners)
    events: list[tuple[str, str]] = field(default_factory=list)  # (state, event) taken

    @property
    def steps(self) -> tuple[str, ...]:
        return STEPS[self.op.kind]

    def step_index(self) -> int:
        """1-based index of the current step; the step count once done."""
        if self.state in self.steps:
            return self.steps.index(self.state) + 1
        return len(self.steps) if self.state == DONE else self._last_step_index()

    def _last_step_index(self) -> int:
        for state, _event in reversed(self.events):
            if state in self.steps:
                return self.steps.index(state) + 1
        return 1

    def to_dict(self, now: float) -> dict[str, Any]:
        end = self.finished if self.finished is not None else now
        return {
            "id": self.id,
            "kind": self.op.kind,
            "group": self.op.group,
            "node": self.op.node,
            "target": self.op.target,
            "reason": self.op.reason,
            "conf_ver": self.op.conf_ver,
            "status": self.status,
            "step": self.state,
            "step_index": self.step_index(),
            "steps": len(self.steps),
            "started_at": self.started_at,
            "elapsed": round(end - self.started, 3),
            "error": self.error,
            "last_error": self.last_error,
            "attempts": self.attempts,
        }


# --- judging a step from reports ----------------------------------------------------------

Event = tuple[str, str | None]  # (event, detail)


def _desired(op: Operator, g: GroupInfo) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The group's membership once ``op`` is done, from its PD membership ``g``."""
    voters, learners = g.voters, g.learners
    if op.kind == "add_learner":
        learners = learners if op.node in learners else (*learners, op.node)
    elif op.kind == "promote_learner":
        voters = voters if op.node in voters else (*voters, op.node)
        learners = tuple(n for n in learners if n != op.node)
    elif op.kind == "remove_replica":
        voters = tuple(n for n in voters if n != op.node)
    return voters, learners


def _effect(op: Operator, g: GroupInfo) -> GroupInfo:
    """``g`` as it will be once ``op`` is done (for planning around running operators)."""
    if op.kind == "transfer_leader":
        return replace(g, leader=op.target)
    if op.kind == "move_range":
        return replace(g, ranges=_without(g.ranges, op.span), moving=())
    if op.kind == "create_group":
        return g
    voters, learners = _desired(op, g)
    return replace(g, voters=voters, learners=learners)


def _without(ranges: tuple[tuple[int, int], ...] | None,
             span: tuple[int, int] | None) -> tuple[tuple[int, int], ...] | None:
    """``ranges`` less ``span`` (which lies inside one of them)."""
    if ranges is None or span is None:
        return ranges
    out: list[tuple[int, int]] = []
    for s, e in ranges:
        if s <= span[0] and span[1] <= e:
            out += [r for r in ((s, span[0]), (span[1], e)) if r[0] < r[1]]
        else:
            out.append((s, e))
    return tuple(out)


def _owns(g: GroupInfo | None, span: tuple[int, int] | None) -> bool:
    return g is not None and span is not None and any(
        s <= span[0] and span[1] <= e for s, e in g.ranges or ())


def _judge_create_group(run: OperatorRun, obs: Observation, cfg: ExecutorConfig) -> Event:
    gid, voters = run.op.group, run.op.voters
    g, rep = obs.group(gid), obs.reports.get(gid)
    if run.state in ("check", "record") and g is not None:
        if set(g.voters) == set(voters):
            return "recorded", None
        return "exists", f"group {gid} is in the PD with voters {list(g.voters)}"
    if run.state == "check":
        if any(obs.view.state(n) != "up" for n in voters):
            return "waiting", None
        return "go", None
    if run.state == "create" and rep is not None \
            and all(rep.replica(n).member for n in voters):
        return "hosted", None
    if run.state == "elect" and rep is not None and rep.leader in voters \
            and set(rep.voters()) == set(voters):
        return "elected", None
    return "waiting", None


def _judge_move_range(run: OperatorRun, obs: Observation, cfg: ExecutorConfig) -> Event:
    span, to = run.op.span, int(run.op.target or -1)
    if _owns(obs.group(to), span):
        return "moved", None
    if run.state == "check" and not _owns(obs.group(run.op.group), span):
        return "not_owned", f"group {run.op.group} does not own the range any more"
    return "go" if run.state == "check" else "waiting", None


def _recorded(run: OperatorRun, g: GroupInfo) -> bool:
    """The PD holds this operator's record: one conf_ver on, with its membership."""
    if run.desired is None or g.conf_ver != run.conf_ver + 1:
        return False
    voters, learners = run.desired
    return set(g.voters) == set(voters) and set(g.learners) == set(learners)


def _judge_add_learner(run: OperatorRun, obs: Observation, g: GroupInfo,
                       rep: GroupReport | None, cfg: ExecutorConfig) -> Event:
    n = run.op.node
    if run.state == "check":
        if obs.view.state(n) != "up":
            return "node_unavailable", f"node {n} is {obs.view.state(n)}"
        if n in g.voters:
            return "already_voter", f"node {n} is already a voter of group {g.id}"
        return "go", None
    if rep is None:
        return "waiting", None
    if run.state == "create_learner" and rep.replica(n).member:
        return "hosted", None
    if run.state == "add_learner" and rep.role(n) == LEARNER:
        return "learner", None
    if run.state == "catch_up" and rep.role(n) == LEARNER \
            and rep.caught_up(n, cfg.catch_up_slack):
        return "caught_up", None
    return "waiting", None


def _judge_promote(run: OperatorRun, obs: Observation, g: GroupInfo,
                   rep: GroupReport | None, cfg: ExecutorConfig) -> Event:
    n = run.op.node
    if rep is None:
        return "waiting", None
    if run.state == "catch_up":
        if rep.role(n) == VOTER:
            return "already_voter", None
        if rep.role(n) == LEARNER and rep.caught_up(n, cfg.catch_up_slack):
            return "caught_up", None
    if run.state == "promote" and rep.role(n) == VOTER:
        return "voter", None
    return "waiting", None


def _judge_remove(run: OperatorRun, obs: Observation, g: GroupInfo,
                  rep: GroupReport | None, cfg: ExecutorConfig) -> Event:
    n = run.op.node
    if run.state == "drop_replica":
        if obs.view.state(n) == "down":
            return "dropped", None  # it deletes the replica the PD no longer lists when back
        if rep is None or (not rep.replica(n).member and rep.role(n) is None):
            return "dropped", None
        return "waiting", None
    if rep is None or rep.leader is None:
        return "waiting", None
    if run.state == "check":
        if rep.leader == n:
            return "is_leader", f"node {n} leads group {g.id}: transfer leadership first"
        if rep.role(n) is None:
            return "already_removed", None
        left = len(rep.voters()) - 1
        if left < obs.view.replicas:
            return "too_few_voters", (f"removing {n} would leave group {g.id} "
                                      f"{left} voters (target {obs.view.replicas})")
        return "go", None
    if run.state == "remove_voter" and rep.role(n) is None:
        return "removed", None
    return "waiting", None


def _judge_transfer(run: OperatorRun, obs: Observation, g: GroupInfo,
                    rep: GroupReport | None, cfg: ExecutorConfig) -> Event:
    target = run.op.target
    if rep is None or rep.leader is None or target is None:
        return "waiting", None
    if run.state == "check":
        if rep.leader == target:
            return "already_leader", None
        if rep.role(target) != VOTER:
            return "target_not_voter", f"node {target} is not a voter of group {g.id}"
        return "go", None
    if run.state == "transfer_leader" and rep.leader == target:
        return "moved", None
    return "waiting", None


_JUDGES: dict[str, Callable[[OperatorRun, Observation, GroupInfo, GroupReport | None,
                             ExecutorConfig], Event]] = {
    "add_learner": _judge_add_learner,
    "promote_learner": _judge_promote,
    "remove_replica": _judge_remove,
    "transfer_leader": _judge_transfer,
}


def judge(run: OperatorRun, obs: Observation, now: float, cfg: ExecutorConfig) -> Event:
    """The event the observation shows for ``run``'s current step."""
    if run.op.kind in ("create_group", "move_range"):
        # Not a membership change: no conf_ver to keep (a move must not be
        # cancelled half way by a replica change of its groups).
        judged = (_judge_create_group if run.op.kind == "create_group"
                  else _judge_move_range)
        seen = judged(run, obs, cfg)
        if seen[0] == "waiting" and now - run.step_started > cfg.timeout(run.state):
            return "deadline", (f"step {run.state} did not complete within "
                                f"{cfg.timeout(run.state):g} s")
        return seen
    gid = run.op.group
    g = obs.group(gid)
    if g is None:
        return "conf_changed", f"group {gid} is no longer in the PD"
    if run.state == "record_group":
        if _recorded(run, g):
            return "recorded", None
        if g.conf_ver == run.conf_ver and run.refusal is not None \
                and run.refusal.get("code") != "conf_ver_mismatch":
            return "refused", f"the PD refused the record: {run.refusal.get('message')}"
    if g.conf_ver > run.conf_ver:
        return "conf_changed", (f"group {gid}'s conf_ver moved from {run.conf_ver} to "
                                f"{g.conf_ver} (not by this operator)")
    if g.conf_ver < run.conf_ver:
        # A view older than this operator's own record: wait for a newer one.
        event: Event = ("waiting", None)
    else:
        event = _JUDGES[run.op.kind](run, obs, g, obs.reports.get(gid), cfg)
    if event[0] == "waiting" and now - run.step_started > cfg.timeout(run.state):
        return "deadline", (f"step {run.state} did not complete within "
                            f"{cfg.timeout(run.state):g} s")
    return event


# --- the executor ---------------------------------------------------------------------------


@dataclass
class PassResult:
    """What one :meth:`Executor.run_once` did."""

    planned: list[Operator]  # the planner's operators this pass (before filtering)
    started: list[OperatorRun]
    finished: list[OperatorRun]  # done, failed or cancelled this pass
    balanced: bool  # nothing was running and the planner proposed nothing


class Executor:
    """Runs operators against a :class:`ClusterActions`, one pass at a time.

    Passes must not overlap (one caller, e.g. the PD leader's loop). ``clock``
    (seconds, monotonic) times steps and deadlines, ``wall`` (seconds since the
    epoch) stamps ``started_at``, ``sleep`` paces :meth:`until_balanced`; tests
    inject all three.
    """

    def __init__(
        self,
        actions: ClusterActions,
        config: ExecutorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.actions = actions
        self.config = config or ExecutorConfig()
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._running: dict[int, OperatorRun] = {}  # by group
        self._history: collections.deque[OperatorRun] = collections.deque(
            maxlen=self.config.history)
        self._ids = itertools.count(1)
        self._counts: collections.Counter[str] = collections.Counter()
        self._passes = 0
        self._balanced = False

    # -- operators ---------------------------------------------------------------------------

    def running(self) -> list[OperatorRun]:
        return sorted(self._running.values(), key=lambda r: r.id)

    def submit(self, op: Operator) -> OperatorRun | None:
        """Start ``op`` (advanced from the next pass on); None if its group is busy."""
        if op.kind not in STEPS:
            raise ValueError(f"unknown operator kind {op.kind!r}")
        if op.group in self._running:
            return None
        now = self._clock()
        run = OperatorRun(
            id=next(self._ids), op=op, state=STEPS[op.kind][0], conf_ver=op.conf_ver,
            started=now, started_at=int(self._wall() * 1000), step_started=now,
        )
        self._running[op.group] = run
        self._counts["started"] += 1
        log.info("operator_started", id=run.id, op=op.describe(), reason=op.reason)
        return run

    async def run_once(self, view_provider: ViewProvider) -> PassResult:
        """One pass: observe, advance every running operator, plan, start new ones."""
        self._passes += 1
        obs = await view_provider()
        busy_before = set(self._running)
        finished: list[OperatorRun] = []
        for run in self.running():
            await self._advance(run, obs, finished)
        # Plan on the view with the effects of the operators still running and
        # of those that completed this pass (the observation predates both);
        # groups that ran an operator this pass wait for the next observation.
        projected = self._projected(obs.view, [r for r in finished if r.status == DONE])
        planned = plan(projected)
        started = []
        for op in planned:
            if op.group in busy_before or op.group in self._running:
                continue
            if len(self._running) >= self.config.max_running:
                break
            new = self.submit(op)
            if new is not None:
                started.append(new)
                await self._advance(new, obs, finished)
        self._balanced = (not busy_before and not planned and not self._running
                          and settled(projected))
        return PassResult(planned, started, finished, self._balanced)

    async def until_balanced(
        self,
        view_provider: ViewProvider,
        timeout: float,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        *,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """Pass after pass until one finds nothing to do, or ``timeout`` seconds pass.

        Returns the last :meth:`progress` (its ``balanced`` says which);
        ``on_progress`` gets it after every pass (a CLI progress bar).
        """
        deadline = self._clock() + timeout
        while True:
            result = await self.run_once(view_provider)
            prog = self.progress()
            if on_progress is not None:
                on_progress(prog)
            if result.balanced or self._clock() >= deadline:
                return prog
            await self._sleep(interval)

    def progress(self) -> dict[str, Any]:
        """Running operators, a bounded history of finished ones, and counts."""
        now = self._clock()
        history = [r.to_dict(now) for r in self._history]
        return {
            "executor": "running",
            "balanced": self._balanced,
            "passes": self._passes,
            "counts": {
                "running": len(self._running),
                "started": self._counts["started"],
                DONE: self._counts[DONE],
                FAILED: self._counts[FAILED],
                CANCELLED: self._counts[CANCELLED],
            },
            "running": [r.to_dict(now) for r in self.running()],
            "finished": [h for h in history if h["status"] == DONE],
            "failed": [h for h in history if h["status"] == FAILED],
            "cancelled": [h for h in history if h["status"] == CANCELLED],
        }

    # -- internals --------------------------------------------------------------------------

    def _projected(self, view: ClusterView, done: Sequence[OperatorRun] = ()) -> ClusterView:
        ops = {r.op.group: r.op for r in done}
        ops.update((gid, r.op) for gid, r in self._running.items())
        groups = [_effect(ops[g.id], g) if g.id in ops else g for g in view.groups]
        known = {g.id for g in groups}
        for op in ops.values():
            if op.kind == "create_group" and op.group not in known:
                groups.append(GroupInfo(op.group, op.voters, ranges=()))
            elif op.kind == "move_range" and op.span is not None:
                # The target gains what the source gives up.
                to = int(op.target or -1)
                groups = [replace(g, ranges=(*(g.ranges or ()), op.span))
                          if g.id == to and g.ranges is not None
                          and op.span not in g.ranges else g for g in groups]
        return replace(view, groups=tuple(groups))

    async def _advance(self, run: OperatorRun, obs: Observation,
                       finished: list[OperatorRun]) -> None:
        """Judge ``run``'s step from ``obs`` and take the table's transitions.

        Transitions without an action are followed at once (the same
        observation judges the next step); one with an action ends the pass
        for this operator: its completion shows in a later observation.
        """
        for _ in range(len(run.steps) + 2):
            now = self._clock()
            event, detail = judge(run, obs, now, self.config)
            if event == "waiting":
                if run.pending_action is not None:
                    await self._issue(run, run.pending_action, obs)
                return
            nxt, action = transition(run.op.kind, run.state, event)
            run.events.append((run.state, event))
            if event == "recorded":
                run.conf_ver += 1
            if nxt != run.state:
                run.state = nxt
                run.step_started = now
                run.pending_action = None
            if nxt in TERMINAL:
                if nxt == FAILED and detail is None:
                    detail = f"no transition for event {event} at this step"
                self._finish(run, nxt, detail, now, finished)
                return
            if action is not None:
                await self._issue(run, action, obs)
                return

    async def _issue(self, run: OperatorRun, action: str, obs: Observation) -> None:
        op, a = run.op, self.actions
        g = obs.group(op.group)
        run.attempts += 1
        try:
            if action == "create_learner":
                voters = g.voters if g is not None else ()
                call: Awaitable[Any] = a.create_learner(op.node, op.group, voters)
            elif action == "add_learner":
                call = a.add_learner(op.group, op.node)
            elif action == "promote":
                call = a.promote(op.group, op.node)
            elif action == "remove_voter":
                call = a.remove_voter(op.group, op.node)
            elif action == "drop_replica":
                call = a.drop_replica(op.node, op.group)
            elif action == "transfer_leader":
                call = a.transfer_leader(op.group, op.target or "")
            elif action == "create_group":
                call = a.create_group(op.group, op.voters)
            elif action == "record_new_group":
                call = a.record_new_group(op.group, op.voters)
            elif action == "move_range":
                assert op.span is not None
                call = a.move_range(op.group, int(op.target or -1), *op.span)
            elif action == "record_group":
                if g is None:
                    raise LookupError(f"group {op.group} is not in the PD")
                run.desired = _desired(op, g)
                run.refusal = None
                call = a.record_group(op.group, run.desired[0], run.desired[1], run.conf_ver)
            else:
                raise ValueError(f"unknown action {action!r}")
            result = await asyncio.wait_for(call, self.config.action_timeout)
        except Exception as exc:  # noqa: BLE001 - judged, and issued again, next pass
            run.last_error = f"{action}: {exc!r}"
            log.info("operator_step_retried", id=run.id, op=op.describe(), step=action,
                     error=repr(exc))
            run.pending_action = action
            return
        run.pending_action = None
        if action == "record_group" and isinstance(result, Mapping) and not result.get("ok"):
            err = result.get("error")
            run.refusal = dict(err) if isinstance(err, Mapping) else {"message": str(err)}
            run.last_error = f"record_group: {run.refusal.get('message')}"

    def _finish(self, run: OperatorRun, status: str, detail: str | None, now: float,
                finished: list[OperatorRun]) -> None:
        run.status = status
        run.finished = now
        if status != DONE:
            run.error = detail
        self._running.pop(run.op.group, None)
        log.info("operator_finished", id=run.id, op=run.op.describe(), status=status,
                 detail=detail, seconds=round(now - run.started, 3))
        self._history.append(run)
        self._counts[status] += 1
        finished.append(run)
