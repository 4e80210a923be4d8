"""pysyncobj defects reproduced against bare behaviour, and shown harmless with our hardening.

Three group hosts run in this process on loopback (real sockets, real pysyncobj,
a tiny in-memory state machine). Each defect test runs the same scenario twice:
with the mitigation switched off it must reproduce the defect — so we would
notice if an upgrade fixed or changed it — and with it on the defect is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from raftmem.shardgroups.host import HARDENING, GroupHost, HostConfig, ProposalFailed, RaftTiming
from tests.cluster.harness import free_ports

ALL = HARDENING


class MemSM:
    """Applies entries in order, remembers the highest index it applied."""

    def __init__(self, path: str) -> None:
        self.applied_index = 0
        self.went_backwards = False

    def apply(self, index: int, payload: bytes) -> dict[str, Any]:
        if index <= self.applied_index:
            return {"ok": True, "skipped": True}
        self.applied_index = index
        return {"ok": True, "index": index}

    def close(self) -> None:
        pass


@asynccontextmanager
async def hosts(tmp: str, hardening: frozenset[str], durable: bool = True,
                members: int = 3, sm_factory: Any = MemSM) -> AsyncIterator[list[GroupHost]]:
    ports = free_ports(members)
    peers = {f"n{i + 1}": ("127.0.0.1", ports[i]) for i in range(members)}
    hs = [GroupHost(HostConfig(
        node_id=n, raft_bind=peers[n], peers=peers, groups={0: list(peers)},
        data_dir=os.path.join(tmp, n), secret=b"test", durable=durable, timing=RaftTiming(),
        sm_factory=sm_factory, hardening=hardening,
    )) for n in peers]
    for h in hs:
        h.start()
    try:
        yield hs
    finally:
        for h in hs:
            h.stop()


async def poll(pred: Any, timeout: float, what: str, explain: Any = None) -> Any:
    """Poll until ``pred`` returns something other than None/False (0 is a valid index);
    ``explain()``, if given, describes the state when it times out."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v is not None and v is not False:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}"
                                 + (f": {explain()}" if explain is not None else ""))
        await asyncio.sleep(0.01)


def leader_index(hs: list[GroupHost]) -> int | None:
    for i, h in enumerate(hs):
        if h.status().get(0, {}).get("role") == "leader":
            return i
    return None


async def next_index_after_a_stale_ack(tmp: str, hardening: frozenset[str]) -> tuple[int, int]:
    """The leader's nextIndex for a follower before and after an old ack arrives late.

    The follower is cut silently, so entries the leader sends it are lost while
    the leader's nextIndex runs ahead; then an ack the follower "sent" for an
    older entry arrives — exactly what a delayed ack on a live link looks like.
    """
    async with hosts(tmp, hardening) as hs:
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        leader = hs[li].replicas[0]
        fi = (li + 1) % 3
        follower = hs[fi].cfg.node_id
        node = next(n for n in leader._SyncObj__otherNodes if n.id == follower)
        await asyncio.gather(*(asyncio.wait_for(hs[li].propose(0, b"x"), 5) for _ in range(5)))
        hs[li].isolate([follower], silent=True)
        await asyncio.gather(*(asyncio.wait_for(hs[li].propose(0, b"y"), 5) for _ in range(10)))
        out: dict[str, int] = {}
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        def inject() -> None:  # on the raft thread, like a real delivery
            match = leader._SyncObj__raftMatchIndex[node]
            out["before"] = leader._SyncObj__raftNextIndex[node]
            leader._on_message(node, {"type": "next_node_idx", "next_node_idx": match + 2,
                                      "reset": False, "success": True})
            out["after"] = leader._SyncObj__raftNextIndex[node]
            loop.call_soon_threadsafe(done.set)

        hs[li].call_soon(inject)
        await asyncio.wait_for(done.wait(), 5)
        hs[li].heal()
        return out["before"], out["after"]


LOST = 30  # entries only the deposed leader has: one round trip each without the fix


async def deposed_leader_catches_up_under_load(tmp: str, hardening: frozenset[str]) -> bool:
    """Whether a deposed leader with uncommitted entries catches up while writes go on.

    The leader is cut off after appending entries no one else has; the others
    elect a leader at a newer term and keep writing. After the heal, the old
    leader's log ends in entries that conflict with the new leader's.
    """
    async with hosts(tmp, hardening) as hs:
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        await asyncio.gather(*(asyncio.wait_for(hs[li].propose(0, b"x"), 5) for _ in range(5)))
        old = hs[li].replicas[0]
        others = [h for i, h in enumerate(hs) if i != li]
        hs[li].isolate([h.cfg.node_id for h in others], silent=True)
        for h in others:
            h.isolate([hs[li].cfg.node_id], silent=True)
        logged = len(old._SyncObj__raftLog)
        doomed = [asyncio.ensure_future(asyncio.wait_for(hs[li].propose(0, b"lost"), 10))
                  for _ in range(LOST)]
        await poll(lambda: len(old._SyncObj__raftLog) >= logged + LOST or None, 5,
                   "the cut-off leader to append entries only it has")
        nl = await poll(lambda: next((i for i, h in enumerate(hs) if i != li
                                      and h.status().get(0, {}).get("role") == "leader"), None),
                        10, "a new leader among the others")
        stop = asyncio.Event()

        async def writer() -> None:
            while not stop.is_set():
                # Load only: outcomes are not checked here.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(hs[nl].propose(0, b"w"), 5)

        writers = [asyncio.ensure_future(writer()) for _ in range(16)]
        await poll(lambda: hs[nl].status()[0]["commit_index"] > logged + 50 or None, 10,
                   "the new leader to commit under load")
        for h in hs:
            h.heal()
        target = hs[nl].status()[0]["commit_index"]
        try:
            await poll(lambda: hs[li].status()[0]["commit_index"] >= target or None, 6,
                       "the old leader to catch up")
            caught_up = True
        except AssertionError:
            caught_up = False
        stop.set()
        for d in doomed:
            d.cancel()
        await asyncio.gather(*writers, *doomed, return_exceptions=True)
        return caught_up


def test_defect_8_deposed_leader_never_catches_up_under_load(tmp_path) -> None:
    assert not asyncio.run(deposed_leader_catches_up_under_load(
        str(tmp_path / "bare"), HARDENING - {"commit_hint"})), \
        "bare pysyncobj caught up with a conflicting log tail under load: re-check defect 8"
    assert asyncio.run(deposed_leader_catches_up_under_load(str(tmp_path / "ours"), HARDENING))


class GatedSnapshotSM(MemSM):
    """Writes its snapshot only when the test opens the gate."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.gate = threading.Event()

    def snapshot_to(self, path: str, meta: bytes) -> None:
        assert self.gate.wait(10), "the test never opened the snapshot gate"
        with open(path, "wb") as f:
            f.write(meta)


async def log_after_compacting_past_a_truncation(tmp: str, hardening: frozenset[str]) -> tuple[int, str | None]:
    """Defect 2's mechanism, step by step: a follower starts a snapshot at its
    applied index; while it is written, the log is truncated below that index
    (what pysyncobj does when a leader re-sends entries it already has, defect
    1); then the snapshot completes and pysyncobj compacts up to its index.
    Returns the follower's log length and its fail-stop reason afterwards."""
    async with hosts(tmp, hardening, sm_factory=GatedSnapshotSM) as hs:
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        await asyncio.gather(*(asyncio.wait_for(hs[li].propose(0, b"x"), 5) for _ in range(30)))
        fi = (li + 1) % 3
        f = hs[fi].replicas[0]
        await poll(lambda: f.raftLastApplied >= 30 or None, 5, "the follower to apply")
        # Nothing reaches the follower from now on: the truncation stays as it is.
        hs[fi].isolate([h.cfg.node_id for h in hs if h is not hs[fi]], silent=True)
        hs[fi].call_soon(f.forceLogCompaction)
        await poll(lambda: f._snapshot_thread is not None or None, 5, "the snapshot to start")
        first = f._SyncObj__raftLog[0][1]
        hs[fi].call_soon(lambda: f._SyncObj__deleteEntriesFrom(first + 5))
        await poll(lambda: f._SyncObj__raftLog[-1][1] == first + 4 or None, 5, "the truncation")
        f.sm.gate.set()
        await poll(lambda: f._snapshot_thread is None or None, 5, "the snapshot to be collected")
        # An empty log fails the next tick that looks at it — at the latest when
        # the isolated follower's election timer fires (0.25-0.5 s). Give it 2 s.
        with contextlib.suppress(AssertionError):
            await poll(lambda: f.failed is not None or None, 2, "a fail-stop")
        return len(f._SyncObj__raftLog), f.failed


def test_defect_2_compacting_past_a_truncated_log_empties_it(tmp_path) -> None:
    length, failed = asyncio.run(log_after_compacting_past_a_truncation(
        str(tmp_path / "bare"), HARDENING - {"compaction_guard"}))
    assert length == 0 and failed is not None and "IndexError" in failed, \
        f"bare pysyncobj kept a log of {length} entries ({failed}): re-check defect 2"
    length, failed = asyncio.run(log_after_compacting_past_a_truncation(str(tmp_path / "ours"), HARDENING))
    assert length > 0 and failed is None


def test_defect_1_stale_acks_rewind_next_index(tmp_path) -> None:
    before, after = asyncio.run(next_index_after_a_stale_ack(str(tmp_path / "bare"), frozenset()))
    assert after < before, "bare pysyncobj no longer rewinds nextIndex on a late ack: re-check defect 1"
    before, after = asyncio.run(next_index_after_a_stale_ack(str(tmp_path / "ours"), ALL))
    assert after == before


async def term_after_isolating_a_follower(tmp: str, hardening: frozenset[str]) -> tuple[int, int]:
    async with hosts(tmp, hardening) as hs:
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        await asyncio.wait_for(hs[li].propose(0, b"x"), 5)
        term_before = hs[li].status()[0]["term"]
        fi = (li + 1) % 3
        follower = hs[fi].cfg.node_id
        others = [h.cfg.node_id for h in hs if h.cfg.node_id != follower]
        # A silent cut (frames dropped, connections still up), as iptables does.
        hs[fi].isolate(others, silent=True)
        for i, h in enumerate(hs):
            if i != fi:
                h.isolate([follower], silent=True)
        await asyncio.sleep(2.0)  # the fault's duration, not a synchronisation
        for h in hs:
            h.heal()
        # Healed: wait until the group agrees again — one term, a leader that the
        # isolated replica follows — and a write commits.
        def converged() -> bool | None:
            st = [h.status()[0] for h in hs]
            one_term = len({x["term"] for x in st}) == 1
            return (one_term and st[fi]["leader"] is not None
                    and sum(x["role"] == "leader" for x in st) == 1) or None
        await poll(converged, 10, "the group to converge after heal")
        lj = await poll(lambda: leader_index(hs), 10, "a leader after heal")
        await asyncio.wait_for(hs[lj].propose(0, b"y"), 5)
        return term_before, hs[lj].status()[0]["term"]


def test_defect_4_isolated_follower_deposes_a_healthy_leader(tmp_path) -> None:
    before, after = asyncio.run(term_after_isolating_a_follower(str(tmp_path / "bare"), frozenset()))
    assert after > before, "bare pysyncobj kept its term: re-check defect 4"
    before, after = asyncio.run(term_after_isolating_a_follower(str(tmp_path / "ours"), ALL))
    assert after == before, f"term moved from {before} to {after} although the leader was healthy"


async def fsync_count(tmp: str, durable: bool) -> int:
    async with hosts(tmp, ALL, durable=durable) as hs:
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        await asyncio.gather(*(asyncio.wait_for(hs[li].propose(0, b"x"), 10) for _ in range(200)))
        return sum(h.fsyncs for h in hs)


@pytest.mark.parametrize("durable", [True, False])
def test_defect_5_journal_is_synced_before_acks_leave(tmp_path, durable: bool) -> None:
    n = asyncio.run(fsync_count(str(tmp_path), durable))
    assert (n > 0) if durable else (n == 0)


def test_defect_6_bare_pysyncobj_accepts_concurrent_membership_changes(tmp_path) -> None:
    """Reproduction only: raftmem's groups run with static membership (the
    placement driver will serialise changes and add learners first), so this
    shows the hazard that work must handle, against bare pysyncobj."""
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf

    ports = free_ports(5)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    conf = {"dynamicMembershipChange": True, "connectionRetryTime": 0.1, "raftMinTimeout": 0.3,
                "raftMaxTimeout": 0.6, "appendEntriesPeriod": 0.05}
    objs = [SyncObj(addrs[i], [a for a in addrs[:3] if a != addrs[i]],
                    SyncObjConf(bindAddress=addrs[i], **conf)) for i in range(3)]
    try:
        deadline = time.monotonic() + 15
        while not any(o._isLeader() for o in objs):
            assert time.monotonic() < deadline, "no leader"
            time.sleep(0.02)  # pysyncobj's own threads tick; this only polls
        leader = next(o for o in objs if o._isLeader())
        # pysyncobj refuses membership changes until the leader's no-op is applied.
        deadline = time.monotonic() + 10
        while not (leader._SyncObj__noopIDx is not None
                   and leader.raftLastApplied >= leader._SyncObj__noopIDx):
            assert time.monotonic() < deadline, "the leader's no-op never applied"
            time.sleep(0.02)
        results: list[int] = []
        leader.addNodeToCluster(addrs[3], callback=lambda _r, err: results.append(err))
        leader.addNodeToCluster(addrs[4], callback=lambda _r, err: results.append(err))
        deadline = time.monotonic() + 10
        while len(results) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        # Both changes are in the log at once: 3 -> 5 voters in one step, and the
        # two new (absent) voters already count for quorum.
        status = leader.getStatus()
        assert status["partner_nodes_count"] == 4
        assert results == [FAIL_REASON.SUCCESS, FAIL_REASON.SUCCESS], results
    finally:
        for o in objs:
            o.destroy()


class _MakeDir:
    """Unpickling this runs ``os.mkdir(path)``: harmless, and visible."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (self.path,))


def test_defect_7_bare_pysyncobj_runs_a_strangers_pickle(tmp_path) -> None:
    """Reproduction only: bare pysyncobj's TCP transport (here bound to loopback,
    no password) unpickles whatever a stranger sends — code execution. raftmem
    does not use that transport: ours authenticates peers and never unpickles
    (tests/cluster/test_transport.py::test_stranger_sending_a_pickle_is_dropped)."""
    import pickle
    import socket
    import struct
    import zlib

    from pysyncobj import SyncObj, SyncObjConf

    port = free_ports(1)[0]
    addr = f"127.0.0.1:{port}"
    obj = SyncObj(addr, [], SyncObjConf(bindAddress=addr, connectionRetryTime=0.1))
    marker = str(tmp_path / "ran")
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "bare pysyncobj never listened"
                time.sleep(0.02)  # pysyncobj's own thread binds; this only polls
        data = zlib.compress(pickle.dumps(_MakeDir(marker)), 3)
        s.sendall(struct.pack("i", len(data)) + data)
        deadline = time.monotonic() + 10
        while not os.path.isdir(marker):
            assert time.monotonic() < deadline, \
                "bare pysyncobj did not unpickle a stranger's message: re-check defect 7"
            time.sleep(0.02)  # polls for the side effect
        s.close()
    finally:
        obj.destroy()


def test_defect_3_bare_pysyncobj_loses_the_callback_of_a_raising_apply(tmp_path) -> None:
    """Reproduction: when the replicated method raises, bare pysyncobj has already
    taken the entry's callbacks; the exception leaves the tick, the entry is
    re-applied (and raises) on every later tick, and the caller hears nothing."""
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Raising(SyncObj):  # type: ignore[misc]
        @replicated  # type: ignore[misc]
        def boom(self) -> None:
            raise RuntimeError("boom")

    port = free_ports(1)[0]
    addr = f"127.0.0.1:{port}"
    obj = Raising(addr, [], SyncObjConf(bindAddress=addr, autoTick=False,
                                         journalFile=str(tmp_path / "journal")))
    try:
        deadline = time.monotonic() + 10
        while not obj._isLeader():
            assert time.monotonic() < deadline, "no leader"
            obj.doTick(0.01)
        heard: list[Any] = []
        obj.boom(callback=lambda res, err: heard.append((res, err)))
        raised = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # 2 s of ticks: the callback's window
            try:
                obj.doTick(0.01)
            except RuntimeError:
                raised += 1
        assert raised >= 2 and heard == [], \
            f"bare pysyncobj answered ({heard}) or stopped raising ({raised}): re-check defect 3"
    finally:
        obj.destroy()


class RaisingSM(MemSM):
    def apply(self, index: int, payload: bytes) -> dict[str, Any]:
        if payload == b"boom":
            raise RuntimeError("boom")
        return super().apply(index, payload)


async def outcomes_after_a_raising_apply(tmp: str) -> tuple[str | None, str]:
    async with hosts(tmp, HARDENING, sm_factory=RaisingSM) as hs:
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        await asyncio.wait_for(hs[li].propose(0, b"x"), 5)
        # Its outcome is never reported (the entry cannot be applied): the node
        # waits for every proposal with a deadline and answers 504 at its end.
        first = asyncio.ensure_future(hs[li].propose(0, b"boom"))
        r = hs[li].replicas[0]
        await poll(lambda: r.failed is not None or None, 5, "the replica to fail-stop")
        try:
            await asyncio.wait_for(hs[li].propose(0, b"y"), 1)
            after = "accepted"
        except ProposalFailed as e:
            after = f"{e.reason}, definite={e.definite}"
        first.cancel()
        return r.failed, after


def test_defect_3_a_raising_apply_fail_stops_the_replica_and_refuses_at_once(tmp_path) -> None:
    failed, after = asyncio.run(outcomes_after_a_raising_apply(str(tmp_path)))
    assert failed is not None and "boom" in failed
    assert after == "replica_failed, definite=True"
