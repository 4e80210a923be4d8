"""One run, in Jepsen's phases: setup → chaos → heal → recovery → final reads → check.

    setup      start the nodes, wait until every one is ready, create the
               namespace (and the register keys), set up the nemeses
    chaos      `--concurrency` clients run the workload for `--time` seconds
               while the nemeses follow their seeded schedule
    heal       end any active fault (the schedule's own heals happen in chaos)
    recovery   deadline-poll until every node is ready again
    converge   eventual tier only: poll GET /admin/digests until every replica
               of every group agrees (or a deadline)
    final      read every key on every node (recorded in the history)
    check      the checkers of the tier (linearizability; session; convergence),
               then the reports

Whatever happens (an exception, Ctrl-C, SIGTERM), the nemeses are torn down
(the iptables chain removed) and every node process the run started is
stopped, by PID; the same cleanup is registered with `atexit` as a last resort.
The history recorded so far is always written.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from jepsen_like.checker.check import check_history
from jepsen_like.checker.convergence import agreement
from jepsen_like.checker.history import HistoryError, parse_history
from jepsen_like.checker.report import render_html
from jepsen_like.checker.session import check_sessions
from jepsen_like.harness import report, timeline
from jepsen_like.harness.api import Api
from jepsen_like.harness.cluster import Cluster, ClusterError
from jepsen_like.harness.config import WEAK_TIERS, RunConfig
from jepsen_like.harness.recorder import Recorder
from jepsen_like.nemesis import nemeses as nem
from jepsen_like.nemesis.schedule import Fault, make_schedule
from jepsen_like.workloads import Op, Workload
from jepsen_like.workloads import build as build_workload
from jepsen_like.workloads.client import Completion, RegisterClient, Session

EXIT_OK, EXIT_INVALID, EXIT_UNKNOWN, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
QUIET_LEAD_S = 0.1  # --fault-quiet: clients stop invoking this long before a fault starts


@dataclass
class RunOutcome:
    run_dir: Path
    exit_code: int
    results: dict[str, Any]


@dataclass
class Pacer:
    """Spaces invocations over all clients to `rate` per second (a timed schedule, not a sync)."""

    rate: float
    _next: float = field(default_factory=time.monotonic)

    async def wait(self) -> None:
        now = time.monotonic()
        at = max(self._next, now)
        self._next = at + 1.0 / self.rate
        if at > now:
            await asyncio.sleep(at - now)


@dataclass
class Counters:
    by_type: dict[str, int] = field(default_factory=lambda: {"ok": 0, "fail": 0, "info": 0})

    def add(self, kind: str) -> None:
        self.by_type[kind] += 1

    def text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.by_type.items())


def combine(verdicts: list[Any]) -> Any:
    """false beats unknown beats true."""
    if any(v is False for v in verdicts):
        return False
    if any(v is not True for v in verdicts):  # "unknown" is neither true nor false
        return "unknown"
    return True


def exit_code_for(valid: Any) -> int:
    if valid is True:
        return EXIT_OK
    return EXIT_INVALID if valid is False else EXIT_UNKNOWN


def make_run_dir(store: Path, label: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    base = store / f"{label}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


async def perform(client: RegisterClient, op: Op) -> Completion:
    if op.f == "read":
        return await client.read(op.key)
    if op.f == "write":
        return await client.write(op.key, op.value)
    return await client.cas(op.key, op.value[0], op.value[1])


class Run:
    def __init__(self, cfg: RunConfig, say: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.workload: Workload = build_workload(
            cfg.workload, cfg.keys, cfg.clients, cfg.read_fraction
        )
        self.run_dir = make_run_dir(cfg.store, cfg.label())
        self.cluster = Cluster(
            self.run_dir / "nodes",
            cfg.nodes,
            cfg.groups,
            list(cfg.node_args),
            address_base=cfg.address_base,
            spares=cfg.spares,
        )
        self.recorder = Recorder()
        self.counters = Counters()
        self.nemeses: dict[str, nem.Nemesis] = {}
        self.nemesis_setup: dict[str, Any] = {}
        self.schedule: list[Fault] = make_schedule(
            cfg.seed,
            cfg.nemeses,
            cfg.time_s,
            self.cluster.node_ids,
            cfg.groups,
            cfg.fault_s,
            cfg.healthy_s,
            cfg.partition_modes,
        )
        self.timeline: list[dict[str, Any]] = []
        self.phases: dict[str, list[int]] = {}
        self.active_fault: str = "-"
        self.errors: list[str] = []
        self.final: dict[str, dict[str, Any]] = {}
        self.recovery: dict[str, Any] = {}
        self.convergence: dict[str, Any] | None = None
        self.sessions: list[Session] = []
        self.gate = asyncio.Event()  # clients invoke only while it is set (--fault-quiet)
        self.gate.set()
        self.interrupted = False
        self.next_process = cfg.clients
        self._say = say or (lambda s: None)
        self._torn_down = False

    def say(self, text: str) -> None:
        self._say(f"[{self.cfg.label()}] {text}")

    # -- phases ------------------------------------------------------------

    def _phase(self, name: str) -> None:
        now = self.recorder.now()
        for span in self.phases.values():
            if len(span) == 1:
                span.append(now)
        self.phases[name] = [now]

    async def main(self) -> None:
        cfg = self.cfg
        atexit.register(self.teardown)
        self.cluster.prepare(cluster_id=f"jepsen-{self.run_dir.name}")
        self.say(f"run directory {self.run_dir}")
        hosts = [p.host for p in self.cluster.nodes if p.wanted]
        spare = [f"{p.id} ({p.host})" for p in self.cluster.nodes if not p.wanted]
        self.say(
            f"starting {cfg.nodes} nodes on {hosts[0]}..{hosts[-1]}"
            + (f"; spare slot {', '.join(spare)}" if spare else "")
        )
        self.cluster.start_all()
        async with Api(cfg.op_timeout_s) as api:
            self.cluster.api = api
            took = await self.cluster.wait_ready(cfg.ready_timeout_s)
            self.say(f"all nodes ready in {took:.1f}s")
            # One client per node for setup and the final reads; each worker of the
            # chaos phase makes its own (with its session in the session tier).
            clients = {
                p.id: RegisterClient(
                    api,
                    p.url,
                    f"{self.run_dir.name}-{p.id}",
                    consistency=cfg.consistency,
                    max_staleness_ms=cfg.max_staleness_ms,
                )
                for p in self.cluster.nodes
            }
            await self._setup_workload(clients[self.cluster.node_ids[0]])
            for name in cfg.nemeses:
                n = nem.build(
                    name,
                    self.cluster,
                    cfg.partition_via,
                    cfg.chain,
                    placement_timeout_s=cfg.placement_timeout_s,
                    quiesce_s=cfg.op_timeout_s + 1.0,
                )
                self.nemeses[name] = n
                self.nemesis_setup[name] = await n.setup()
            if self.nemesis_setup:
                self.say(f"nemeses ready: {self.nemesis_setup}")
            self.recorder = Recorder()  # time 0 of the history: the start of the chaos phase
            try:
                await self._chaos(api)
                self._phase("recovery")
                self.say("healed; waiting for every node to be ready")
                try:
                    took = await self.cluster.wait_ready(cfg.recovery_timeout_s)
                    self.recovery = {"recovered": True, "seconds": round(took, 3)}
                except ClusterError as exc:
                    self.recovery = {"recovered": False, "error": str(exc)}
                    self.errors.append(f"recovery: {exc}")
                    self.say(f"NOT RECOVERED: {exc}")
                if cfg.tier == "eventual":
                    # Before the final reads: no client writes any more, so this is
                    # quiescence, and the final reads then see the converged state.
                    self._phase("converge")
                    await self._converge()
                self._phase("final")
                await self._final_reads(clients)
                self._phase("done")
                await self._snapshot_cluster_state()
            except asyncio.CancelledError:
                self.interrupted = True
                self.say("interrupted: healing, stopping nodes, writing what was recorded")
                await self._heal_all()

    async def _setup_workload(self, client: RegisterClient) -> None:
        deadline = time.monotonic() + self.cfg.ready_timeout_s
        while True:
            try:
                await self.workload.setup(client)
                return
            except Exception as exc:  # retried until the deadline, then raised
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workload setup failed: {exc}") from exc
            await asyncio.sleep(0.2)  # retry interval of a loop with its own deadline

    async def _chaos(self, api: Api) -> None:
        cfg = self.cfg
        self._phase("chaos")
        stop = asyncio.Event()
        pacer = Pacer(cfg.rate) if cfg.rate else None
        self.say(
            f"chaos for {cfg.time_s:g}s: {cfg.clients} clients, workload {cfg.workload}, "
            f"nemesis {'+'.join(cfg.nemeses) or 'none'}, {len(self.schedule)} faults, "
            f"seed {cfg.seed}"
        )
        workers = [
            asyncio.create_task(self._worker(i, api, stop, pacer)) for i in range(cfg.clients)
        ]
        nemesis = asyncio.create_task(self._nemesis(stop))
        bar = tqdm(
            total=round(cfg.time_s),
            unit="s",
            desc="chaos",
            disable=not cfg.progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=True,
        )
        start = time.monotonic()
        try:
            while (elapsed := time.monotonic() - start) < cfg.time_s:
                bar.n = min(round(elapsed), bar.total)
                bar.set_postfix_str(
                    f"{self.counters.text()} fault={self.active_fault}", refresh=False
                )
                bar.refresh()
                await asyncio.sleep(min(0.5, cfg.time_s - elapsed))  # progress refresh period
            bar.n = bar.total
            bar.set_postfix_str(self.counters.text(), refresh=True)
        finally:
            bar.close()
            stop.set()
            self.gate.set()
            self._phase("heal")
            # Clients stop invoking; in-flight operations end within their timeouts.
            results = await asyncio.gather(nemesis, *workers, return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    self.errors.append("".join(traceback.format_exception(r)))
            await self._heal_all()

    async def _worker(self, i: int, api: Api, stop: asyncio.Event, pacer: Pacer | None) -> None:
        """Client i: bound to node i mod n (n: every node slot) while that node is in
        service, else to one that is (`Cluster.target_for`, chosen per operation: the
        membership nemesis takes nodes out and brings them back). In the session tier it
        is one session, kept across the new process ids an `info` gives it, and its reads
        go round the nodes in service (reading through other nodes than the one that took
        the write is what sessions are for)."""
        cfg = self.cfg
        nodes = self.cluster.nodes
        session = Session() if cfg.tier == "session" else None
        if session is not None:
            self.sessions.append(session)
        clients = {
            p.id: RegisterClient(
                api,
                p.url,
                f"{self.run_dir.name}-{p.id}-c{i}",
                consistency=cfg.consistency,
                session=session,
                max_staleness_ms=cfg.max_staleness_ms,
            )
            for p in nodes
        }
        tags: dict[str, Any] = {} if session is None else {"session": i}
        generator = self.workload.generator_for(i)
        rng = random.Random(f"{cfg.seed}/client/{i}")
        seen: dict[str, Any] = {}
        process = i
        reads = 0
        while not stop.is_set():
            if not self.gate.is_set():
                await self.gate.wait()
                continue
            if pacer is not None:
                await pacer.wait()
                if stop.is_set():
                    break
            op = generator.next_op(rng, seen)
            turn = 0
            if session is not None and op.f == "read":
                reads += 1
                turn = reads
            node = self.cluster.target_for(i, turn)
            key = self.workload.history_key(op.key)
            op_id = self.recorder.invoke(process, op.f, key, op.value, node=node.id, **tags)
            # Counted from the choice on (no await in between), so a nemesis that takes
            # the node out of service and then waits for zero sees this request.
            self.cluster.inflight_requests[node.id] += 1
            try:
                c = await perform(clients[node.id], op)
            except asyncio.CancelledError:
                self.recorder.complete(
                    op_id,
                    "info",
                    None if op.f == "read" else op.value,
                    node=node.id,
                    error="interrupted",
                    **tags,
                )
                raise
            finally:
                self.cluster.inflight_requests[node.id] -= 1
            value = c.value if op.f == "read" else op.value
            if op.f == "read" and c.type != "ok":
                value = None
            self.recorder.complete(op_id, c.type, value, node=node.id, **tags, **c.extra())
            self.counters.add(c.type)
            if c.type == "ok":
                seen[op.key] = value if op.f != "cas" else op.value[1]
            elif c.type == "info":
                # Jepsen: a process whose operation may still be in flight is
                # never reused; the client carries on as a new process.
                process += cfg.clients
            if c.error is not None and "connect" in c.error:
                # The node is down: back off instead of filling the history
                # with thousands of instant refusals (a rate, not a sync).
                await asyncio.sleep(0.1)
        self.next_process = max(self.next_process, process + 1)

    async def _nemesis(self, stop: asyncio.Event) -> None:
        t0 = time.monotonic()

        async def until(offset: float) -> bool:
            """Wait until `offset` s into the chaos phase; True if the phase ended first."""
            remaining = t0 + offset - time.monotonic()
            if stop.is_set():
                return True
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(stop.wait(), remaining)
                return True
            except TimeoutError:
                return False

        quiet = self.cfg.fault_quiet_s
        for k, fault in enumerate(self.schedule):
            if quiet and await until(max(0.0, fault.start - QUIET_LEAD_S)):
                return
            if quiet:
                self.gate.clear()
            if await until(fault.start):
                return
            n = self.nemeses[fault.nemesis]
            entry: dict[str, Any] = {
                "nemesis": fault.nemesis,
                "planned": fault.to_json(),
                "health_before": await self.cluster.health(),
                "start_ns": self.recorder.now(),
            }
            self.timeline.append(entry)
            try:
                entry["inject"] = await n.inject(fault.params)
            except Exception as exc:  # noqa: BLE001 - a failed fault is reported, the run goes on
                entry["error"] = f"inject: {exc}"
                self.errors.append(f"nemesis {fault.nemesis} inject: {exc}")
            what = timeline.describe_fault(entry.get("inject", {}))
            self.active_fault = f"{fault.nemesis}: {what}"
            if quiet:
                entry["quiet"] = await self._settle(entry.get("inject", {}), quiet, stop)
                self.gate.set()
            ended = await until(fault.end)
            entry["heal"] = await self._heal(n)
            entry["end_ns"] = self.recorder.now()
            self.active_fault = "-"
            if ended:
                return  # the recovery phase waits for the nodes
            # Health after the heal: how long until every node is ready again,
            # within the healthy stretch before the next fault.
            nxt = self.schedule[k + 1].start if k + 1 < len(self.schedule) else self.cfg.time_s
            budget = max(0.5, nxt - (time.monotonic() - t0))
            try:
                entry["recovered_s"] = round(await self.cluster.wait_ready(budget), 3)
            except ClusterError as exc:
                entry["recovered_s"] = None
                entry["recovery_error"] = str(exc)
            entry["health_after"] = await self.cluster.health()

    async def _settle(
        self, inject: dict[str, Any], limit_s: float, stop: asyncio.Event
    ) -> dict[str, Any]:
        """--fault-quiet: keep the clients quiet until the fault's group has a new leader.

        Deadline-polls the leader of the group the fault targeted (the highest term
        any live node reports) until it is not the leader from before the fault, or
        `limit_s` passes. Faults without a group leader just keep the clients quiet
        for `limit_s`. Clients were stopped shortly before the fault, so the log of
        every replica was complete when it started: with a bridge, the cut-off
        follower can win an election, and the clients then act at once, while the
        old leader may still believe its lease.
        """
        start = time.monotonic()
        group, before = inject.get("group"), inject.get("leader")
        out: dict[str, Any] = {"leader_before": before}
        while time.monotonic() - start < limit_s and not stop.is_set():
            if group is not None and before is not None:
                now = await self.cluster.leader_of(int(group))
                if now is not None and now != before:
                    out["leader_after"] = now
                    break
            await asyncio.sleep(0.01)  # poll interval of a loop with its own deadline
        out["seconds"] = round(time.monotonic() - start, 3)
        return out

    async def _heal(self, n: nem.Nemesis) -> dict[str, Any]:
        try:
            return await n.heal()
        except Exception as exc:  # noqa: BLE001 - reported; teardown heals again
            self.errors.append(f"nemesis {n.name} heal: {exc}")
            return {"error": str(exc)}

    async def _heal_all(self) -> None:
        for n in self.nemeses.values():
            await self._heal(n)
        for p in self.cluster.nodes:  # nothing stays down or paused after the chaos phase
            if p.paused:
                self.cluster.resume(p.id)
            if p.wanted and not p.alive():  # not a spare or a node stopped for good
                self.cluster.restart(p.id)

    async def _snapshot_cluster_state(self) -> None:
        """Each node's /admin/cluster at the end, beside its log (for post-mortems);
        and the placement driver's registry and operators when there is one."""
        for p in self.cluster.nodes:
            if not p.alive():
                continue
            state = await self.cluster.cluster_state(p.id)
            if state is not None:
                (p.dir / "admin-cluster.json").write_bytes(
                    orjson.dumps(state, option=orjson.OPT_INDENT_2)
                )
        if self.cfg.spares:
            placement = {
                "registry": await self.cluster.registry(),
                "operators": await self.cluster.operators(),
            }
            (self.cluster.root / "placement.json").write_bytes(
                orjson.dumps(placement, option=orjson.OPT_INDENT_2)
            )

    async def _final_reads(self, clients: dict[str, RegisterClient]) -> None:
        """Read every key on every node, each retried until ok or the shared deadline.

        All (node, key) pairs are read concurrently, each by a process of its
        own, so a node that cannot serve costs one deadline, not one per key.
        """
        deadline = time.monotonic() + self.cfg.final_read_timeout_s
        # Final reads are linearizable in every tier: they judge what the cluster
        # converged to, not what a weak tier may serve.
        linearizable = self.cfg.tier in WEAK_TIERS

        async def reader(node_id: str, key: str, process: int) -> None:
            client = clients[node_id]
            hkey = self.workload.history_key(key)
            got: dict[str, Any] = {"ok": False, "attempts": 0}
            self.final.setdefault(key, {})[node_id] = got
            while True:
                op_id = self.recorder.invoke(process, "read", hkey, None, node=node_id, final=True)
                c = await client.read(key, linearizable=linearizable)
                got["attempts"] += 1
                self.recorder.complete(
                    op_id,
                    c.type,
                    c.value if c.type == "ok" else None,
                    node=node_id,
                    final=True,
                    **c.extra(),
                )
                self.counters.add(c.type)
                if c.type == "ok":
                    got.update(ok=True, value=c.value)
                    return
                if time.monotonic() > deadline:
                    got["error"] = c.error
                    return
                await asyncio.sleep(0.2)  # retry interval of a loop with its own deadline

        pairs = [(n, k) for n in self.cluster.active_ids for k in self.workload.keys]
        self.say(f"final reads of {len(self.workload.keys)} keys on every node")
        base = self.next_process
        await asyncio.gather(*(reader(n, k, base + i) for i, (n, k) in enumerate(pairs)))

    async def _converge(self) -> None:
        """Poll GET /admin/digests on every node until all replicas agree or the deadline."""
        cfg = self.cfg
        start = time.monotonic()
        deadline = start + cfg.convergence_timeout_s
        nodes = self.cluster.active_ids
        replicas: dict[str, list[str]] | None = None
        for node_id in nodes:
            state = await self.cluster.cluster_state(node_id)
            groups = ((state or {}).get("routing") or {}).get("groups")
            if isinstance(groups, dict) and groups:
                replicas = {str(g): list(m) for g, m in groups.items()}
                break
        self.say(f"waiting up to {cfg.convergence_timeout_s:g}s for the replicas to converge")
        polls = 0
        while True:
            polls += 1
            snapshots: dict[str, Any] = {}
            statuses: dict[str, Any] = {}
            for node_id in nodes:
                reply = await self.cluster.admin_get(node_id, "/admin/digests")
                statuses[node_id] = reply.status if reply.status is not None else reply.error
                if reply.ok and isinstance(reply.body, dict):
                    snapshots[node_id] = reply.body
            verdict = agreement(snapshots, nodes, replicas)
            verdict.update(polls=polls, seconds=round(time.monotonic() - start, 3))
            if all(st in (404, 405) for st in statuses.values()):
                verdict = {
                    "valid": "unknown",
                    "reason": f"the nodes have no GET /admin/digests (answered {statuses})",
                    "polls": polls,
                }
                break
            if verdict["valid"] is True or time.monotonic() > deadline:
                if verdict["valid"] is not True:
                    verdict["statuses"] = statuses
                    verdict["reason"] = (
                        f"replicas still differ after {cfg.convergence_timeout_s:g}s: groups "
                        f"{verdict.get('disagreeing_groups', [])}, missing nodes "
                        f"{verdict.get('missing_nodes', [])}"
                    )
                break
            await asyncio.sleep(0.2)  # poll interval of a loop with its own deadline
        self.convergence = verdict
        self.say(f"convergence: {verdict['valid']} after {polls} poll(s)")

    # -- teardown ------------------------------------------------------------

    def teardown(self) -> None:
        """Remove every fault and stop every node we started. Idempotent; also runs at exit."""
        if self._torn_down:
            return
        self._torn_down = True
        for n in self.nemeses.values():
            try:
                n.teardown()
            except Exception as exc:  # noqa: BLE001 - keep tearing down the rest
                self.errors.append(f"nemesis {n.name} teardown: {exc}")
        try:
            self.cluster.stop_all()
        finally:
            atexit.unregister(self.teardown)

    # -- results -------------------------------------------------------------

    def finish(self, error: BaseException | None) -> RunOutcome:
        cfg = self.cfg
        if error is not None:
            self.errors.append("".join(traceback.format_exception(error)))
        closed = self.recorder.close_open("never completed (run ended)")
        history = self.recorder.document(
            name=self.run_dir.name,
            model=self.workload.model,
            initial_value=None,
            notes=f"jepsen_like run: {cfg.replay_command()}",
            workload=cfg.workload,
            consistency=cfg.tier,
            nodes=self.cluster.node_ids,
            nemesis=self.timeline,
            phases=self.phases,
        )
        history_path = self.run_dir / "history.json"
        history_path.write_bytes(orjson.dumps(history))
        checkers: dict[str, Any] = {}
        weak = cfg.tier in WEAK_TIERS
        # Reads of a weak tier are not linearizable by design; everything else in the
        # history (writes, cas with its linearizable compare, final reads) still is.
        lin_doc = report.without_chaos_reads(history) if weak else history
        if lin_doc["ops"]:
            self.say(
                f"checking {len(lin_doc['ops']) // 2} operations for linearizability "
                f"(time limit {cfg.checker_timeout_s:g}s)"
            )
            try:
                parsed = parse_history(lin_doc, source=str(history_path))
                result = check_history(parsed, timeout=cfg.checker_timeout_s)
                checkers["linearizable"] = result.to_json()
                checkers["linearizable"]["valid"] = result.linearizable
                if result.linearizable is False:
                    # The checker's own page: the failing key's operations around the window.
                    (self.run_dir / "violation.html").write_text(
                        render_html(parsed, result), encoding="utf-8"
                    )
                    checkers["linearizable"]["report"] = "violation.html"
            except HistoryError as exc:
                checkers["linearizable"] = {"valid": "unknown", "reason": f"bad history: {exc}"}
        else:
            checkers["linearizable"] = {"valid": "unknown", "reason": "no operations recorded"}
        if weak:
            checkers["linearizable"]["scope"] = (
                f"writes, cas and final reads; the {cfg.tier} reads are judged by the "
                f"{'session' if cfg.tier == 'session' else 'convergence'} checker"
            )
        tiers: dict[str, Any] = {"tier": cfg.tier}
        if cfg.tier == "session":
            checkers["session"] = check_sessions(history["ops"])
            tokens = sum(s.updates for s in self.sessions)
            tiers["session"] = {"sessions": len(self.sessions), "responses_with_token": tokens}
            if tokens == 0 and self.sessions:
                checkers["session"]["note"] = (
                    "no response carried a Raftmem-Session token: the nodes served "
                    "consistency=session without sessions (as linearizable, or not at all)"
                )
        if cfg.tier == "eventual":
            checkers["convergence"] = self.convergence or {
                "valid": "unknown",
                "reason": "no convergence check was made (the run ended before it)",
            }
            tiers["eventual"] = report.eventual_stats(history["ops"])
        checkers["final-reads"] = report.final_reads_verdict(
            self.final,
            self.workload.keys,
            self.cluster.active_ids,
            require_agreement=cfg.tier == "eventual",
        )
        valid = combine([c["valid"] for c in checkers.values()])
        code = exit_code_for(valid)
        if self.interrupted:
            code = EXIT_INTERRUPTED
        elif error is not None:
            # The run broke; a violation in what was recorded still counts.
            broken = any(c.get("valid") is False for c in checkers.values())
            code = EXIT_INVALID if broken else EXIT_ERROR
        elif valid is True and self.errors:
            # A pass with a broken fault or a crashed client proves less than it says.
            code = EXIT_ERROR
        results = {
            "name": self.run_dir.name,
            "valid": valid,
            "exit_code": code,
            "checkers": checkers,
            "consistency": tiers,
            "counts": report.counts(history["ops"]),
            "latency_ms": report.latencies(history["ops"]),
            "throughput": report.throughput(history["ops"], self.phases),
            "command": [sys.executable, "-m", "jepsen_like", *cfg.argv] if cfg.argv else None,
            "replay": cfg.replay_command(),
            "seed": cfg.seed,
            "config": cfg.to_json(),
            "nemesis": {
                "setup": self.nemesis_setup,
                "schedule": [f.to_json() for f in self.schedule],
                "timeline": self.timeline,
                # What the placement nemeses did, counted per kind (joins, drains, ...).
                "summary": {
                    name: getattr(n, "summary")()  # noqa: B009 - only some nemeses have one
                    for name, n in self.nemeses.items()
                    if callable(getattr(n, "summary", None))
                },
            },
            "phases_ns": self.phases,
            "recovery": self.recovery,
            "final_reads": self.final,
            "synthetic_infos": closed,
            "interrupted": self.interrupted,
            "errors": self.errors,
            "nodes": {
                p.id: {
                    "api": p.api,
                    "starts": p.starts,
                    "log": str(p.log_path.relative_to(self.run_dir)),
                    "id": p.rid,
                    "running_at_end": p.wanted,
                    "processes": p.history,
                }
                for p in self.cluster.nodes
            },
        }
        (self.run_dir / "results.json").write_bytes(
            orjson.dumps(results, option=orjson.OPT_INDENT_2, default=str)
        )
        try:
            timeline.write(self.run_dir / "timeline.html", history, results)
        except Exception as exc:  # noqa: BLE001 - a broken report must not hide the verdict
            self.errors.append(f"timeline.html: {exc}")
        if valid is True and not cfg.keep_data:
            for p in self.cluster.nodes:
                for data in p.dir.glob("data*"):  # data, data-2, ... (one per join)
                    shutil.rmtree(data, ignore_errors=True)
        return RunOutcome(self.run_dir, code, results)


def execute(cfg: RunConfig, say: Callable[[str], None] | None = None) -> RunOutcome:
    """Run the whole test; always tears down, always writes the run directory."""
    run = Run(cfg, say)
    error: BaseException | None = None

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await run.main()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        asyncio.run(guarded())
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.interrupted = True
    except Exception as exc:  # noqa: BLE001 - recorded in results.json, exit code 3
        error = exc
        run.say(f"ERROR: {exc}")
    finally:
        run.teardown()
    outcome = run.finish(error)
    if os.environ.get("JEPSEN_LIKE_DEBUG") and run.errors:
        for e in run.errors:
            print(e, file=sys.stderr)
    return outcome
