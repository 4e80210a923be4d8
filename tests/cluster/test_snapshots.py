"""Log compaction and snapshot install with real pysyncobj and the real state machine."""

from __future__ import annotations

import asyncio
import os
import time

from raftmem import commands as C
from raftmem.shardgroups.host import GroupHost, HostConfig, ProposalFailed, RaftTiming
from raftmem.statemachine import Reader
from tests.cluster.harness import free_ports
from tests.cluster.test_hardening import leader_index, poll


def put(i: int) -> bytes:
    m = {"id": f"m{i}", "agent_id": "a", "text": "t" * 200, "embedding": [float(i % 7), 1.0, 0.5, 2.0],
         "metadata": {"i": i}, "tags": ["x"], "expires_at": None}
    return C.encode(C.put("ns", m, 1_000 + i, f"r{i}", [1, 1]))


async def propose(hs: list[GroupHost], payload: bytes, timeout: float = 30.0) -> None:
    """Propose through the current leader, retrying through leader changes (the
    payloads carry request ids, so a retry applies once)."""
    deadline = time.monotonic() + timeout
    while True:
        li = leader_index(hs)
        if li is not None:
            try:
                await asyncio.wait_for(hs[li].propose(0, payload), 2)
                return
            except (ProposalFailed, TimeoutError):
                pass
        assert time.monotonic() < deadline, "no commit before the deadline"
        await asyncio.sleep(0.02)


def digest(path: str) -> str:
    r = Reader(path)
    try:
        return r.digest()
    finally:
        r.close()


async def scenario(tmp: str) -> dict[str, object]:
    ports = free_ports(3)
    peers = {f"n{i + 1}": ("127.0.0.1", ports[i]) for i in range(3)}
    timing = RaftTiming(compaction_entries=300, compaction_seconds=3600)
    hs = [GroupHost(HostConfig(node_id=n, raft_bind=peers[n], peers=peers, groups={0: list(peers)},
                               data_dir=os.path.join(tmp, n), secret=b"t", timing=timing))
          for n in peers]
    for h in hs:
        h.start()
    try:
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        await propose(hs, C.encode(C.create_namespace("ns", 4, "l2", 1, "ns")))
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        fi = (li + 1) % 3
        follower = hs[fi].cfg.node_id
        hs[li].isolate([follower], silent=True)
        others = [h.cfg.node_id for h in hs if h.cfg.node_id != follower]
        for i, h in enumerate(hs):
            if i != li and i != fi:
                h.isolate([follower], silent=True)
        hs[fi].isolate(others, silent=True)
        leader = hs[li].replicas[0]
        for start in range(0, 1500, 100):
            await asyncio.gather(*(propose(hs, put(i)) for i in range(start, start + 100)))
        await poll(lambda: leader.snapshots_taken >= 1 or None, 20, "a snapshot on the leader")
        await poll(lambda: len(leader._SyncObj__raftLog) < 1000 or None, 20, "the leader.s log compacted")
        for h in hs:
            h.heal()
        fr = hs[fi].replicas[0]
        await poll(lambda: fr.sm.applied_index >= leader.sm.applied_index or None, 30,
                   "the follower to catch up")
        return {
            "installed": fr.snapshots_installed,
            "leader_digest": digest(os.path.join(tmp, hs[li].cfg.node_id, "groups", "g0", "state.db")),
            "follower_digest": digest(os.path.join(tmp, follower, "groups", "g0", "state.db")),
            "snapshot_seconds": leader.last_snapshot_seconds,
        }
    finally:
        for h in hs:
            h.stop()


def test_a_far_behind_follower_catches_up_from_a_background_snapshot(tmp_path) -> None:
    t0 = time.monotonic()
    out = asyncio.run(scenario(str(tmp_path)))
    assert out["installed"] >= 1, out
    assert out["follower_digest"] == out["leader_digest"]
    assert time.monotonic() - t0 < 120


async def bytes_scenario(tmp: str) -> tuple[int, int]:
    ports = free_ports(3)
    peers = {f"n{i + 1}": ("127.0.0.1", ports[i]) for i in range(3)}
    # Entry-count compaction out of reach: only the byte threshold can trigger it.
    timing = RaftTiming(compaction_entries=10**9, compaction_seconds=10**6, compaction_bytes=64 * 1024)
    hs = [GroupHost(HostConfig(node_id=n, raft_bind=peers[n], peers=peers, groups={0: list(peers)},
                               data_dir=os.path.join(tmp, n), secret=b"t", timing=timing))
          for n in peers]
    for h in hs:
        h.start()
    try:
        await poll(lambda: leader_index(hs), 10, "a leader")
        await propose(hs, C.encode(C.create_namespace("ns", 4, "l2", 1, "ns")))
        for start in range(0, 400, 50):
            await asyncio.gather(*(propose(hs, put(i)) for i in range(start, start + 50)))
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        leader = hs[li].replicas[0]
        await poll(lambda: leader.snapshots_taken >= 1 or None, 20, "a byte-triggered snapshot")
        return leader.snapshots_taken, len(leader._SyncObj__raftLog)
    finally:
        for h in hs:
            h.stop()


def test_a_log_large_in_bytes_is_compacted_even_with_few_entries(tmp_path) -> None:
    taken, _ = asyncio.run(bytes_scenario(str(tmp_path)))
    assert taken >= 1
