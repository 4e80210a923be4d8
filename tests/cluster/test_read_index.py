"""ReadIndex: linearizable reads confirmed by a quorum of heartbeat acks, no log write.

Three group hosts in this process on loopback (real sockets, real pysyncobj), as
in test_hardening.py.
"""

from __future__ import annotations

import asyncio

from raftmem.shardgroups.host import HARDENING, ProposalFailed
from tests.cluster.test_hardening import hosts, leader_index, poll


async def read_indexes_cover_acknowledged_writes(tmp: str) -> None:
    async with hosts(tmp, HARDENING) as hs:
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        await poll(lambda: hs[li].replicas[0].noop_applied() or None, 5, "the leader's no-op")
        log_len = [len(h.replicas[0]._SyncObj__raftLog) for h in hs]
        for _ in range(20):
            res = await asyncio.wait_for(hs[li].propose(0, b"x"), 5)
            acked = res["index"]
            for h in hs:  # leader and both followers
                index = await asyncio.wait_for(h.read_index(0), 5)
                assert index >= acked
                assert h.replicas[0].raftLastApplied >= index
        # Only the 20 writes went through the log: reads appended nothing.
        grown = [len(h.replicas[0]._SyncObj__raftLog) - n for h, n in zip(hs, log_len, strict=True)]
        assert max(grown) <= 20, grown
        assert hs[li].replicas[0].read_index_heartbeats > 0


def test_read_index_on_every_replica_covers_every_acknowledged_write(tmp_path) -> None:
    asyncio.run(read_indexes_cover_acknowledged_writes(str(tmp_path)))


async def cut_off_leader_read_index(tmp: str) -> tuple[str, int, int]:
    """Cut the leader off silently; the others elect a leader and commit a write.
    What does a ReadIndex on the old leader answer meanwhile?"""
    async with hosts(tmp, HARDENING) as hs:
        li = await poll(lambda: leader_index(hs), 10, "a leader")
        await asyncio.wait_for(hs[li].propose(0, b"x"), 5)
        old = hs[li]
        others = [h for i, h in enumerate(hs) if i != li]
        old.isolate([h.cfg.node_id for h in others], silent=True)
        for h in others:
            h.isolate([old.cfg.node_id], silent=True)
        # Ask the old leader right away, while it still believes it leads.
        pending = asyncio.ensure_future(old.read_index(0))
        nl = await poll(lambda: next((i for i, h in enumerate(hs) if i != li
                                      and h.status().get(0, {}).get("role") == "leader"), None),
                        10, "a new leader among the others")
        res = await asyncio.wait_for(hs[nl].propose(0, b"y"), 5)
        try:
            index = await asyncio.wait_for(pending, 5)
            outcome = "served"
        except ProposalFailed as e:
            index, outcome = -1, e.reason
        for h in hs:
            h.heal()
        return outcome, index, res["index"]


def test_a_cut_off_leader_never_confirms_a_read_index(tmp_path) -> None:
    outcome, index, newer_write = asyncio.run(cut_off_leader_read_index(str(tmp_path)))
    # Serving would be a stale read: a write at newer_write was acknowledged by
    # the new leader while the old one could still answer from its state.
    assert outcome != "served", f"old leader served a read at {index} (newer write at {newer_write})"


def test_a_single_replica_group_confirms_at_once(tmp_path) -> None:
    async def run() -> int:
        async with hosts(str(tmp_path), HARDENING, members=1) as hs:
            await poll(lambda: leader_index(hs), 10, "a leader")
            await poll(lambda: hs[0].replicas[0].noop_applied() or None, 5, "the no-op")
            return await asyncio.wait_for(hs[0].read_index(0), 5)
    assert asyncio.run(run()) >= 1
