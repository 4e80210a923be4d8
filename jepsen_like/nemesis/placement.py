"""Placement nemeses: nodes join and leave a running cluster, leaders and replicas move.

Both work through raftmem's placement driver (PD, docs/placement.md), as an
operator would: the admin API (``GET/POST /admin/nodes``, ``DELETE
/admin/nodes/{id}``, ``GET /admin/operators``) and, for leadership transfers,
the internal API (``POST /internal/placement/transfer`` at the group's leader,
``POST /internal/placement/state``).

``membership``
    The run starts with the nodes of the cluster file and one spare slot (n4)
    whose process is not running. Each fault is the next step of a cycle:

    * **join** (the spare's first start) / **re-add** (a node drained earlier):
      start the slot's process with ``raftmem node --join`` through a live node,
      with a fresh data directory (a drained node's replicas were dropped), then
      deadline-poll until the PD's registry lists it ``up`` and its ``/readyz``
      answers; only then do clients send it requests;
    * **drain**, when every slot runs: ``DELETE /admin/nodes/{id}`` of one node
      (drawn; only while at least ``min_up`` + 1 nodes are up and registered, so
      ``min_up`` stay; never two at once). The heal deadline-polls until the PD
      has removed it from the registry, takes it out of the clients' rotation,
      waits for its in-flight requests, and stops its process by PID. If the PD
      does not finish in time, the heal reports what the node still holds and
      the failed operators, and cancels the drain by registering the node again.

    Starting a drained node of the cluster file from the cluster file with an
    empty data directory would bring back a voter that forgot its log; so every
    re-added node joins (``raftmem node --join``) under its own id, which
    raftmem allows once the registry lists it removed.

``rebalance``
    n4 joins during setup (before the history starts), so 4 nodes are up. Each
    fault is, drawn:

    * **transfer**: the leader of a random group (a data group or the PD's own)
      is asked to hand leadership to another voter (drawn); the nemesis
      deadline-polls until that voter leads, and reports the answer
      (``started``/``reason``) and where leadership went;
    * **move range**: half of a random range of the routing table (``GET
      /admin/ranges``) moves to another data group (``POST
      /admin/ranges/move``: freeze, copy, release, activate); the nemesis
      reports the steps and how long writes to it waited (the freeze);
    * **drain + re-register**: ``DELETE /admin/nodes/{id}`` of a random node;
      the heal deadline-polls until its replicas are gone, registers it again
      (``POST /admin/nodes`` with the same id and addresses; its process keeps
      running), and deadline-polls until it is ``up`` and holds replicas again.

Heal, for both: no drain is left in progress — finished (membership: the node
stopped) or cancelled — and every node process that runs is ``up`` in the
registry; each heal reports the registry it left.

Everything is reported: each inject and heal returns the action, its target,
the answers and how long each wait took; `summary()` counts them per kind.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from jepsen_like.harness.api import Reply
from jepsen_like.nemesis.nemeses import Unsupported

MIN_UP = 3  # nodes that stay up and registered (a group has 3 replicas)


class PlacementControl(Protocol):
    """What the placement nemeses need from the harness (`Cluster`); faked in tests.

    Nodes are named by *slot* (n1, n2, ...: an address and ports); ``rid(slot)`` is
    the id the node has in raftmem's registry now (it changes when a node of the
    cluster file is re-added).
    """

    @property
    def node_ids(self) -> list[str]: ...  # every slot, spares included

    def rid(self, slot: str) -> str: ...

    def slot_of(self, rid: str) -> str | None: ...

    def running(self, slot: str) -> bool: ...  # the harness started it and has not stopped it

    def alive(self, slot: str) -> bool: ...  # its process is alive right now

    def has_run(self, slot: str) -> bool: ...  # started at least once in this run

    def start_join(self, slot: str, via: str) -> dict[str, Any]: ...  # --join, fresh data dir

    def stop(self, slot: str) -> dict[str, Any]: ...  # SIGTERM by PID, SIGKILL after a grace

    def set_in_service(self, slot: str, serving: bool) -> None: ...  # clients' rotation

    def inflight(self, slot: str) -> int: ...  # client requests in flight to the slot

    async def ready(self, slot: str) -> bool: ...

    async def registry(self) -> dict[str, dict[str, Any]] | None: ...  # GET /admin/nodes by id

    async def drain(self, slot: str) -> Reply: ...  # DELETE /admin/nodes/{rid}

    async def register(self, slot: str) -> Reply: ...  # POST /admin/nodes {id, api, raft}

    async def operators(self) -> dict[str, Any] | None: ...  # GET /admin/operators

    async def pd_groups(self) -> dict[int, dict[str, Any]] | None: ...  # PD state's groups

    async def leader_of(self, group: int) -> str | None: ...  # a registry id

    async def transfer(self, group: int, leader: str, target: str) -> Reply: ...

    async def ranges(self) -> list[dict[str, Any]] | None: ...  # GET /admin/ranges

    async def move_range(self, start: str, end: str, to_group: int) -> Reply: ...


def node_state(registry: dict[str, dict[str, Any]] | None, rid: str) -> str:
    """A node's state in the registry: up, draining, removed, or absent."""
    entry = (registry or {}).get(rid)
    return str(entry.get("state")) if isinstance(entry, dict) else "absent"


def node_groups(registry: dict[str, dict[str, Any]] | None, rid: str) -> list[int]:
    entry = (registry or {}).get(rid)
    return list(entry.get("groups") or []) if isinstance(entry, dict) else []


def up_slots(control: PlacementControl, registry: dict[str, dict[str, Any]] | None) -> list[str]:
    """Slots whose process runs and whose node is ``up`` in the registry."""
    return [
        s
        for s in control.node_ids
        if control.running(s) and node_state(registry, control.rid(s)) == "up"
    ]


def plan_membership(
    control: PlacementControl,
    registry: dict[str, dict[str, Any]] | None,
    order: list[str],
    min_up: int = MIN_UP,
) -> tuple[str, str | None, str]:
    """The next step of the membership cycle: (action, slot, why). Pure given its inputs.

    A slot whose process is not running joins (first time) or is re-added; when
    every slot runs, a drawn node is drained (the first in `order` that holds
    replicas) if ``min_up`` nodes stay up and registered and no other drain is in
    progress; otherwise nothing.
    """
    ranked = [s for s in order if s in control.node_ids] + [
        s for s in control.node_ids if s not in order
    ]
    out = [s for s in ranked if not control.running(s)]
    if out:
        slot = out[0]
        return ("re-add" if control.has_run(slot) else "join"), slot, "not running"
    if registry is None:
        return "none", None, "the registry could not be read"
    draining = [s for s in ranked if node_state(registry, control.rid(s)) == "draining"]
    if draining:
        return "none", None, f"{','.join(draining)} still draining: one drain at a time"
    up = [s for s in ranked if s in up_slots(control, registry)]
    if len(up) - 1 < min_up:
        return "none", None, f"only {len(up)} nodes up and registered: {min_up} must stay"
    # A node that holds replicas first: its drain gives the PD something to move.
    holding = [s for s in up if node_groups(registry, control.rid(s))]
    return "drain", (holding or up)[0], f"{len(up)} up, {len(up) - 1} stay"


OPERATOR_KEYS = ("kind", "group", "node", "target", "status", "step", "elapsed", "error")


def _operators(ops: dict[str, Any] | None, key: str, limit: int = 5) -> list[dict[str, Any]]:
    """The executor's operators under `key` of GET /admin/operators, in short."""
    chosen = [o for o in (ops or {}).get(key) or [] if isinstance(o, dict)]
    out = [{k: o.get(k) for k in OPERATOR_KEYS if o.get(k) is not None} for o in chosen]
    return out[-limit:]


def _failed_operators(ops: dict[str, Any] | None, limit: int = 5) -> list[dict[str, Any]]:
    """Failed operators (from `failed`, and `finished` ones not done), without repeats."""
    finished = {
        **(ops or {}),
        "finished": [o for o in (ops or {}).get("finished") or [] if o.get("status") != "done"],
    }
    out = _operators(finished, "finished", 50) + _operators(ops, "failed", 50)
    unique = [dict(t) for t in dict.fromkeys(tuple(sorted(d.items())) for d in out)]
    return unique[-limit:]


def _reply(reply: Reply) -> dict[str, Any]:
    return {"status": reply.status if reply.status is not None else reply.error, "body": reply.body}


class _Placement:
    """What both nemeses share: deadline-polling, the registry, the pending drain."""

    name = "placement"

    def __init__(
        self,
        control: PlacementControl,
        timeout_s: float = 60.0,
        poll_s: float = 0.2,
        quiesce_s: float = 7.0,
        min_up: int = MIN_UP,
    ) -> None:
        self.control = control
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.quiesce_s = quiesce_s
        self.min_up = min_up
        self.pending: dict[str, Any] | None = None  # the drain in progress
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []

    async def poll(
        self, check: Callable[[], Awaitable[Any]], timeout_s: float | None = None
    ) -> tuple[Any, float]:
        """Call `check` until it returns something truthy or the deadline; (last value, s)."""
        start = time.monotonic()
        deadline = start + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            value = await check()
            if value or time.monotonic() >= deadline:
                return value, round(time.monotonic() - start, 3)
            await asyncio.sleep(self.poll_s)  # poll interval of a loop with its own deadline

    async def bootstrapped(self) -> dict[str, dict[str, Any]]:
        """The registry once the PD has bootstrapped it (deadline-polled: the PD's
        leader writes it at its first tick); Unsupported if it never answers."""
        reg, took = await self.poll(self.control.registry)
        if not reg:
            raise Unsupported(
                f"{self.name}: GET /admin/nodes gave no registry within {took:g}s; the "
                "nodes need the placement driver's admin API"
            )
        return dict(reg)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        self.counts["failures"] += 1

    async def states(self) -> dict[str, str]:
        reg = await self.control.registry()
        return {rid: node_state(reg, rid) for rid in sorted(reg or {})}

    async def join(self, slot: str, action: str, order: list[str]) -> dict[str, Any]:
        """Start `slot` with --join through a serving node; wait until it is up and ready."""
        c = self.control
        candidates = [*order, *c.node_ids]
        via = next((s for s in candidates if s != slot and c.running(s)), None)
        if via is None:
            return {"action": action, "node": slot, "outcome": "no running node to join through"}
        started = c.start_join(slot, via)
        rid = c.rid(slot)
        info: dict[str, Any] = {"action": action, "node": slot, "id": rid, "via": via, **started}

        async def registered() -> str | None:
            if not c.alive(slot):
                return "exited"  # no use waiting
            return "up" if node_state(await c.registry(), rid) == "up" else None

        up, info["registered_s"] = await self.poll(registered)
        if up == "exited":
            info["outcome"] = "failed: the process exited (see its node.log)"
        elif not up:
            info["outcome"] = f"failed: not up in the registry after {self.timeout_s:g}s"
        if "outcome" in info:
            info["stopped"] = c.stop(slot)
            self.fail(f"{action} {slot} ({rid}): {info['outcome']}")
            return info

        async def ready() -> bool:
            return await c.ready(slot)

        is_ready, info["ready_s"] = await self.poll(ready)
        c.set_in_service(slot, True)  # clients may use it even if /readyz lags: it is up
        info["outcome"] = "up" if is_ready else "up, /readyz not ready within the deadline"
        self.counts["joins" if action == "join" else "re_adds"] += 1
        return info

    async def drain_start(self, slot: str, registry: dict[str, Any] | None) -> dict[str, Any]:
        c = self.control
        rid = c.rid(slot)
        reply = await c.drain(slot)
        info: dict[str, Any] = {
            "action": "drain",
            "node": slot,
            "id": rid,
            "groups_before": node_groups(registry, rid),
            "answer": _reply(reply),
        }
        if not reply.ok:
            info["outcome"] = "refused"
            self.fail(f"drain {slot} ({rid}) refused: {info['answer']}")
            return info
        self.pending = {"slot": slot, "id": rid, "since": time.monotonic()}
        info["outcome"] = "draining"
        self.counts["drains_started"] += 1
        return info

    async def wait_drained(self, rid: str, until: str) -> tuple[bool, dict[str, Any] | None, float]:
        """Poll the registry until `rid` is removed (`until="removed"`) or holds no replica
        any more (`until="empty"`); (done, the last registry read, seconds)."""
        last: dict[str, Any] = {}

        async def done() -> bool:
            reg = await self.control.registry()
            if reg is None:
                return False
            last["reg"] = reg
            state = node_state(reg, rid)
            if state == "removed":  # the PD keeps removed nodes, marked so
                return True
            return until == "empty" and not node_groups(reg, rid)

        ok, took = await self.poll(done)
        return bool(ok), last.get("reg"), took

    async def cancel_drain(self, slot: str, info: dict[str, Any]) -> None:
        """The PD did not finish in time: report why, then cancel by registering again."""
        c = self.control
        rid = c.rid(slot)
        reg = await c.registry()
        info["still_holds"] = node_groups(reg, rid)
        info["state"] = node_state(reg, rid)
        ops = await c.operators()
        info["failed_operators"] = _failed_operators(ops)
        info["running_operators"] = _operators(ops, "running")
        up = await self.register_until_up(slot, info)
        info["outcome"] = f"drain not finished within {self.timeout_s:g}s; " + (
            "cancelled" if up else "cancelling failed: not up again"
        )
        self.counts["drain_timeouts"] += 1
        self.fail(f"drain {slot} ({rid}): {info['outcome']}; still holds {info['still_holds']}")

    async def register_until_up(self, slot: str, info: dict[str, Any]) -> bool:
        """``POST /admin/nodes`` for `slot`'s node (same id and addresses) until the
        registry lists it ``up``: registering is idempotent, and is sent again when an
        answer was a refusal or the state is still not up a few reads later (a drain
        that ends meanwhile removes the node; a node's registry view lags about a
        second). Every answer that differs from the first, and the count, go into
        `info`."""
        c = self.control
        rid = c.rid(slot)
        answers: list[dict[str, Any]] = []
        reads = 0

        async def up() -> bool:
            nonlocal reads
            if reads % 5 == 0:
                reply = await c.register(slot)
                answer = _reply(reply)
                body = reply.body if isinstance(reply.body, dict) else {}
                if not reply.ok or body.get("ok") is False:
                    # raftmem answers some refusals with 200 {"ok": false, "error"}
                    self.counts["register_refusals"] += 1
                if not answers or answer != answers[-1]:
                    answers.append(answer)
            reads += 1
            return node_state(await c.registry(), rid) == "up"

        ok, took = await self.poll(up)
        info["register_answers"] = answers[:5]
        info["register_attempts"] = (reads + 4) // 5
        info["up_after_s"] = took
        return bool(ok)

    def summary(self) -> dict[str, Any]:
        return {**dict(sorted(self.counts.items())), "failures": list(self.failures)}

    def teardown(self) -> None:
        self.pending = None


class MembershipNemesis(_Placement):
    """Join / drain / re-add, one step per fault (module docstring)."""

    name = "membership"

    async def setup(self) -> dict[str, Any]:
        c = self.control
        reg = await self.bootstrapped()
        spare = [s for s in c.node_ids if not c.running(s)]
        if not spare:
            raise Unsupported("membership: no spare node slot (the harness starts one)")
        return {"registry": {k: node_state(reg, k) for k in sorted(reg)}, "spare": spare}

    async def inject(self, params: dict[str, Any]) -> dict[str, Any]:
        order = list(params.get("order") or self.control.node_ids)
        if self.pending is not None:
            return {"action": "none", "outcome": f"drain of {self.pending['slot']} in progress"}
        reg = await self.control.registry()
        action, slot, why = plan_membership(self.control, reg, order, self.min_up)
        if action == "none" or slot is None:
            self.counts["skipped"] += 1
            return {"action": "none", "outcome": why}
        if action == "drain":
            return await self.drain_start(slot, reg)
        return await self.join(slot, action, order)

    async def heal(self) -> dict[str, Any]:
        if self.pending is None:
            return {"action": "none", "registry": await self.states()}
        slot, rid = self.pending["slot"], self.pending["id"]
        c = self.control
        info: dict[str, Any] = {"action": "drain", "node": slot, "id": rid}
        done, _, _ = await self.wait_drained(rid, until="removed")
        if not done:
            await self.cancel_drain(slot, info)
        else:
            info["removed_after_s"] = round(time.monotonic() - self.pending["since"], 3)
            c.set_in_service(slot, False)

            async def idle() -> bool:
                return c.inflight(slot) == 0

            _, info["quiesce_s"] = await self.poll(idle, self.quiesce_s)
            info["stopped"] = c.stop(slot)
            info["outcome"] = "removed and stopped"
            self.counts["drains"] += 1
        self.pending = None
        info["registry"] = await self.states()
        return info


class RebalanceNemesis(_Placement):
    """Leadership transfers and drain + re-register, drawn per fault (module docstring)."""

    name = "rebalance"

    async def setup(self) -> dict[str, Any]:
        c = self.control
        await self.bootstrapped()
        joined = []
        for slot in [s for s in c.node_ids if not c.running(s)]:
            info = await self.join(slot, "join", list(c.node_ids))
            joined.append(info)
            if info.get("outcome") != "up":
                raise Unsupported(f"rebalance: {slot} could not join: {info}")

        async def balanced() -> bool:
            ops = await c.operators()
            return bool(ops and ops.get("balanced") and not ops.get("running"))

        ok, took = await self.poll(balanced)
        reg = await c.registry()
        return {
            "joined": joined,
            "balanced": bool(ok),
            "balanced_after_s": took,
            "registry": {
                k: {"state": node_state(reg, k), "groups": node_groups(reg, k)}
                for k in sorted(reg or {})
            },
        }

    async def inject(self, params: dict[str, Any]) -> dict[str, Any]:
        order = list(params.get("order") or self.control.node_ids)
        if self.pending is not None:
            return {"action": "none", "outcome": f"drain of {self.pending['slot']} in progress"}
        if params.get("action") == "drain":
            reg = await self.control.registry()
            up = [s for s in order if s in up_slots(self.control, reg)]
            if len(up) - 1 < self.min_up:
                self.counts["skipped"] += 1
                return {"action": "none", "outcome": f"only {len(up)} nodes up: no drain"}
            holding = [s for s in up if node_groups(reg, self.control.rid(s))]
            return await self.drain_start((holding or up)[0], reg)
        if params.get("action") == "move_range":
            return await self.move_range(params)
        return await self.transfer(params, order)

    async def move_range(self, params: dict[str, Any]) -> dict[str, Any]:
        c = self.control
        ranges = await c.ranges()
        groups = sorted({int(r["group"]) for r in ranges or []})
        if not ranges or len(groups) < 2:
            self.counts["skipped"] += 1
            return {"action": "move_range", "outcome": "skipped: fewer than 2 data groups"}
        pick = int(params.get("pick", 0))
        r = ranges[pick % len(ranges)]
        start = int(r["start"], 16)
        end = (1 << 64) if r["end"] == "end" else int(r["end"], 16)
        if end - start < 2:
            self.counts["skipped"] += 1
            return {"action": "move_range", "outcome": "skipped: a range of one point"}
        half = (start + (end - start) // 2, end) if pick & 1 else (start, start + (end - start) // 2)
        others = [g for g in groups if g != r["group"]]
        to = others[(pick >> 1) % len(others)]
        span = [f"{p:016x}" if p < (1 << 64) else "end" for p in half]
        info: dict[str, Any] = {"action": "move_range", "from": r["group"], "to": to,
                                "start": span[0], "end": span[1]}
        began = time.monotonic()
        reply = await c.move_range(span[0], span[1], to)
        info["seconds"] = round(time.monotonic() - began, 3)
        body = reply.body if isinstance(reply.body, dict) else {}
        if reply.ok:
            info["steps"] = [(st.get("step"), st.get("seconds")) for st in body.get("steps", [])]
            moved = [st for st in body.get("steps", []) if st.get("step") == "activate"]
            info["memories"] = moved[0].get("activated") if moved else 0
            info["outcome"] = f"g{r['group']} -> g{to}"
            self.counts["range_moves"] += 1
            self.unfinished_move = None
        else:
            # A move cut short by a fault (a node down, a timeout): the heal asks
            # for it again, which finishes it (every step is idempotent), so no
            # range stays frozen past the fault.
            info["answer"] = _reply(reply)
            info["outcome"] = f"not done: {reply.describe()}"
            self.counts["range_moves_not_done"] += 1
            self.unfinished_move = (span[0], span[1], to)
        return info

    async def finish_move(self) -> dict[str, Any]:
        assert self.unfinished_move is not None
        start, end, to = self.unfinished_move
        info: dict[str, Any] = {"start": start, "end": end, "to": to}

        async def done() -> bool:
            reply = await self.control.move_range(start, end, to)
            info["answer"] = _reply(reply)
            return reply.ok

        ok, took = await self.poll(done)
        info["outcome"] = f"finished after {took:g}s" if ok else "not finished"
        if ok:
            self.unfinished_move = None
            self.counts["range_moves_finished_at_heal"] += 1
        else:
            self.fail(f"move of [{start}, {end}) to g{to} not finished: {info['answer']}")
        return info

    async def transfer(self, params: dict[str, Any], order: list[str]) -> dict[str, Any]:
        c = self.control
        groups = await c.pd_groups()
        if not groups:
            self.counts["skipped"] += 1
            return {"action": "transfer", "outcome": "skipped: the PD state could not be read"}
        ids = sorted(groups)
        group = ids[int(params.get("pick", 0)) % len(ids)]
        voters = [str(v) for v in groups[group].get("voters") or []]
        leader = await c.leader_of(group)
        info: dict[str, Any] = {
            "action": "transfer",
            "group": group,
            "voters": voters,
            "from": leader,
        }
        ranked = [c.rid(s) for s in order if s in c.node_ids]
        target = next((v for v in ranked if v in voters and v != leader), None)
        if leader is None or target is None:
            self.counts["skipped"] += 1
            info["outcome"] = "skipped: " + ("no leader" if leader is None else "no other voter")
            return info
        info["to"] = target
        reply = await c.transfer(group, leader, target)
        info["answer"] = _reply(reply)
        body = reply.body if isinstance(reply.body, dict) else {}
        if not (reply.ok and body.get("started")):
            self.counts["transfers_not_started"] += 1
            info["outcome"] = f"not started: {body.get('reason') or reply.describe()}"
            return info

        async def moved() -> bool:
            return await c.leader_of(group) == target

        ok, took = await self.poll(moved, min(self.timeout_s, 10.0))
        if ok:
            info["moved_after_s"] = took
            info["outcome"] = f"{target} leads g{group}"
            self.counts["transfers"] += 1
        else:
            info["leader_now"] = await c.leader_of(group)
            info["outcome"] = f"started, but {target} did not lead g{group} within {took:g}s"
            self.counts["transfer_timeouts"] += 1
        return info

    unfinished_move: tuple[str, str, int] | None = None

    async def heal(self) -> dict[str, Any]:
        if self.unfinished_move is not None:
            return {"action": "finish_move", **await self.finish_move(),
                    "registry": await self.states()}
        if self.pending is None:
            return {"action": "none", "registry": await self.states()}
        c = self.control
        slot, rid = self.pending["slot"], self.pending["id"]
        info: dict[str, Any] = {"action": "re-register", "node": slot, "id": rid}
        done, reg, _ = await self.wait_drained(rid, until="empty")
        if not done:
            await self.cancel_drain(slot, info)
            self.pending = None
            info["registry"] = await self.states()
            return info
        info["replicas_gone_after_s"] = round(time.monotonic() - self.pending["since"], 3)
        info["state_when_empty"] = node_state(reg, rid)
        self.counts["drains"] += 1
        self.pending = None
        if not await self.register_until_up(slot, info):
            info["outcome"] = f"registered again but not up within {self.timeout_s:g}s"
            self.fail(f"re-register {slot} ({rid}): {info['outcome']}: {info['register_answers']}")
            info["registry"] = await self.states()
            return info
        self.counts["re_registers"] += 1
        last: dict[str, Any] = {}

        async def serving() -> bool:
            reg = await c.registry()
            last["state"], last["groups"] = node_state(reg, rid), node_groups(reg, rid)
            return last["state"] == "up" and bool(last["groups"])

        ok, took = await self.poll(serving)
        info.update(state=last.get("state"), groups=last.get("groups"))
        if ok:
            info["replicas_back_after_s"] = took
            info["outcome"] = f"up, holds {last['groups']}"
            self.counts["replicas_back"] += 1
        else:
            info["outcome"] = (
                f"registered again but not up with replicas within {self.timeout_s:g}s "
                f"(state {last.get('state')}, groups {last.get('groups')})"
            )
            self.fail(f"re-register {slot} ({rid}): {info['outcome']}")
        info["registry"] = await self.states()
        return info
