"""Membership changes of one group with real pysyncobj and the real state machine:
a new replica joins as a learner (catching up from a snapshot without voting),
is promoted by a single membership entry, takes leadership by transfer, and an
old voter is removed and dropped; one change at a time (defect 6); the layout
survives a restart."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from raftmem import commands as C
from raftmem.shardgroups.host import HARDENING, GroupHost, HostConfig, ProposalFailed, RaftTiming
from tests.cluster.harness import free_ports
from tests.cluster.test_hardening import poll
from tests.cluster.test_snapshots import digest, put

TIMING = RaftTiming(compaction_entries=150, compaction_seconds=3600)


def make_host(tmp: str, n: str, peers: dict[str, tuple[str, int]], groups: dict[int, list[str]],
              hardening: frozenset[str] = HARDENING, timing: RaftTiming = TIMING) -> GroupHost:
    return GroupHost(HostConfig(node_id=n, raft_bind=peers[n], peers=peers, groups=groups,
                                data_dir=os.path.join(tmp, n), secret=b"t", timing=timing,
                                hardening=hardening))


async def three_and_a_spare(tmp: str, timing: RaftTiming = TIMING
                            ) -> tuple[dict[str, GroupHost], dict[str, tuple[str, int]]]:
    """n1-n3 started with group 0 and a leader; n4 started hosting nothing, its
    address known to the others. The hosts and every node's address."""
    ports = free_ports(4)
    peers = {f"n{i + 1}": ("127.0.0.1", ports[i]) for i in range(4)}
    first = {n: peers[n] for n in ("n1", "n2", "n3")}
    hs = {n: make_host(tmp, n, first, {0: list(first)}, timing=timing) for n in first}
    hs["n4"] = make_host(tmp, "n4", peers, {}, timing=timing)
    for h in hs.values():
        h.start()
    await poll(lambda: leader_of(hs), 10, "a leader")
    for n in first:
        await hs[n].add_peer("n4", peers["n4"])
    return hs, peers


def leader_of(hs: dict[str, GroupHost], gid: int = 0) -> str | None:
    for n, h in hs.items():
        r = h.replicas.get(gid)
        if r is not None and r._isLeader():
            return n
    return None


async def write(hs: dict[str, GroupHost], payload: bytes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        n = leader_of(hs)
        if n is not None:
            try:
                await asyncio.wait_for(hs[n].propose(0, payload), 2)
                return
            except (ProposalFailed, TimeoutError):
                pass
        assert time.monotonic() < deadline, "no commit before the deadline"
        await asyncio.sleep(0.02)


def state(hs: dict[str, GroupHost]) -> str:
    return "; ".join(f"{n}: next {h.replicas[0]._SyncObj__raftNextIndex} match "
                     f"{h.replicas[0]._SyncObj__raftMatchIndex} pending "
                     f"{h.replicas[0]._transfer_pending}"
                     for n, h in hs.items() if 0 in h.replicas and h.replicas[0]._isLeader()) \
        + " | " + "; ".join(f"{n}: {h.replicas[0].status()['role']} term {h.replicas[0].raftCurrentTerm} "
                     f"members {h.replicas[0].members()} log {h.replicas[0].status()['last_log_index']} "
                     f"commit {h.replicas[0].raftCommitIndex}"
                     for n, h in hs.items() if 0 in h.replicas)


def db(tmp: str, n: str) -> str:
    return os.path.join(tmp, n, "groups", "g0", "state.db")


async def converged(tmp: str, nodes: list[str], timeout: float = 20.0) -> dict[str, str]:
    """The replicas' digests once they agree (a replica still applying differs
    for a moment); the last ones seen if they never do."""
    deadline = time.monotonic() + timeout
    while True:
        digests = {n: digest(db(tmp, n)) for n in nodes}
        if len(set(digests.values())) == 1 or time.monotonic() > deadline:
            return digests
        await asyncio.sleep(0.05)


async def scenario(tmp: str) -> dict[str, Any]:
    ports = free_ports(4)
    peers = {f"n{i + 1}": ("127.0.0.1", ports[i]) for i in range(4)}
    first = {n: peers[n] for n in ("n1", "n2", "n3")}
    hs = {n: make_host(tmp, n, first, {0: list(first)}) for n in first}
    for h in hs.values():
        h.start()
    out: dict[str, Any] = {}
    try:
        await poll(lambda: leader_of(hs), 10, "a leader")
        await write(hs, C.encode(C.create_namespace("ns", 4, "l2", 1, "ns")))
        for i in range(400):  # past two compactions: the learner needs a snapshot
            await write(hs, put(i))
        lead = hs[leader_of(hs) or "n1"].replicas[0]
        await poll(lambda: lead.snapshots_taken >= 1 or None, 20, "a snapshot on the leader")

        # n4 starts hosting nothing; every node learns its address.
        hs["n4"] = make_host(tmp, "n4", peers, {})
        hs["n4"].start()
        for n in first:
            await hs[n].add_peer("n4", peers["n4"])
        assert await hs["n4"].create_replica(0, list(first), learner=True)
        for n in first:
            assert await hs[n].add_learner(0, "n4")
        r4 = hs["n4"].replicas[0]

        # Learner: catches up (from a snapshot), votes for nothing, counts for nothing.
        async def caught_up() -> bool:
            ln = leader_of(hs)
            return ln is not None and r4.raftLastApplied >= hs[ln].replicas[0].raftCommitIndex
        deadline = time.monotonic() + 30
        while not await caught_up():
            assert time.monotonic() < deadline, "the learner never caught up"
            await asyncio.sleep(0.02)
        out["learner_installed"] = r4.snapshots_installed
        out["learner_members"] = {n: hs[n].replicas[0].members() for n in first}
        out["learner_status"] = r4.status()["learner"]
        out["learner_elections"] = r4.elections_started

        # Promotion: one membership entry, proposed on the leader.
        ln = leader_of(hs)
        assert ln is not None
        await asyncio.wait_for(hs[ln].change_membership(0, "add", "n4"), 10)
        await poll(lambda: all(h.replicas[0].members() == ["n1", "n2", "n3", "n4"]
                               for h in hs.values()) or None, 10, "every replica to see 4 voters")
        out["promoted_learner_flag"] = r4.learner

        # Two changes at once: the second is refused while the first is in flight.
        ln = leader_of(hs)
        assert ln is not None
        res = await asyncio.gather(hs[ln].change_membership(0, "rem", "n3" if ln != "n3" else "n2"),
                                   hs[ln].change_membership(0, "rem", "n4"),
                                   return_exceptions=True)
        out["concurrent"] = [r if r is True else getattr(r, "reason", repr(r)) for r in res]
        removed = "n3" if ln != "n3" else "n2"
        await poll(lambda: all(h.replicas[0].members() == sorted({"n1", "n2", "n3", "n4"} - {removed})
                               for n, h in hs.items() if n != removed) or None, 10,
                   "the removal to reach every remaining voter", lambda: state(hs))
        # The leader stops replicating to a removed voter at once, so it never
        # hears of its removal: it campaigns, and the others ignore it.
        survivors = [n for n in hs if n != removed]
        term = max(hs[n].replicas[0].raftCurrentTerm for n in survivors)
        gone = hs[removed].replicas[0]
        tries = gone.prevotes_started
        await poll(lambda: gone.prevotes_started >= tries + 2 or None, 10,
                   "the removed replica to ask for votes")
        out["term_unchanged"] = max(hs[n].replicas[0].raftCurrentTerm for n in survivors) == term
        assert await hs[removed].drop_replica(0)
        out["dropped_dir_gone"] = not os.path.exists(db(tmp, removed))

        # Leadership transfer to the new voter.
        deadline = time.monotonic() + 15
        while leader_of(hs) != "n4":
            ln = leader_of(hs)
            if ln is not None:
                await hs[ln].transfer_leadership(0, "n4")
            assert time.monotonic() < deadline, "leadership never moved to n4"
            await asyncio.sleep(0.05)
        for i in range(400, 450):
            await write(hs, put(i))
        voters = [n for n in hs if n != removed]
        out["digests"] = await converged(tmp, voters)

        # Restart n4: its replicas.json brings the replica back with its configuration.
        hs["n4"].stop()
        hs["n4"] = make_host(tmp, "n4", peers, {})
        hs["n4"].start()
        out["after_restart_members"] = hs["n4"].replicas[0].members()
        for i in range(450, 470):
            await write(hs, put(i))
        out["digests_after_restart"] = await converged(tmp, voters)
        return out
    finally:
        for h in hs.values():
            h.stop()


def test_learner_join_promotion_transfer_and_removal(tmp_path) -> None:
    out = asyncio.run(scenario(str(tmp_path)))
    assert out["learner_installed"] >= 1, out
    assert out["learner_status"] is True
    assert out["learner_elections"] == 0
    # While a learner, n4 was in no voter's configuration.
    assert all(m == ["n1", "n2", "n3"] for m in out["learner_members"].values()), out
    assert out["promoted_learner_flag"] is False
    assert out["concurrent"][0] is True and out["concurrent"][1] == "denied", out
    assert out["term_unchanged"] is True
    assert out["dropped_dir_gone"] is True
    assert len(set(out["digests"].values())) == 1, out
    assert len(out["after_restart_members"]) == 3 and "n4" in out["after_restart_members"]
    assert len(set(out["digests_after_restart"].values())) == 1, out


async def concurrent_adds(tmp: str, hardening: frozenset[str]) -> list[Any]:
    ports = free_ports(3)
    peers = {f"n{i + 1}": ("127.0.0.1", ports[i]) for i in range(3)}
    hs = {n: make_host(tmp, n, peers, {0: ["n1", "n2", "n3"]}, hardening) for n in peers}
    for h in hs.values():
        h.start()
    try:
        await poll(lambda: leader_of(hs), 10, "a leader")
        await write(hs, C.encode(C.create_namespace("ns", 4, "l2", 1, "ns")))
        ln = leader_of(hs)
        assert ln is not None
        res = await asyncio.gather(hs[ln].change_membership(0, "add", "x1"),
                                   hs[ln].change_membership(0, "add", "x2"),
                                   return_exceptions=True)
        return [r if r is True else getattr(r, "reason", repr(r)) for r in res]
    finally:
        for h in hs.values():
            h.stop()


@pytest.mark.parametrize("fixed", [False, True])
def test_defect_6_one_membership_change_at_a_time(tmp_path, fixed: bool) -> None:
    """Bare pysyncobj puts two voter additions in the log at once (3 -> 5 voters,
    two absent ones counting for quorum: with 5 voters the 3 live ones are still
    a majority, so both commit); ours refuses the second while the first is in
    flight."""
    hardening = HARDENING if fixed else HARDENING - {"single_change"}
    out = asyncio.run(concurrent_adds(str(tmp_path), hardening))
    if fixed:
        assert out == [True, "denied"], out
    else:
        assert out == [True, True], out


def three_hosts(tmp: str) -> dict[str, GroupHost]:
    """Three started hosts, each with a replica of group 0."""
    ports = free_ports(3)
    peers = {f"n{i + 1}": ("127.0.0.1", ports[i]) for i in range(3)}
    hs = {n: make_host(tmp, n, peers, {0: list(peers)}) for n in peers}
    for h in hs.values():
        h.start()
    return hs


async def transfer_under_load(tmp: str) -> dict[str, Any]:
    hs = three_hosts(tmp)
    stop = asyncio.Event()
    written = 0

    async def writer(w: int) -> None:
        nonlocal written
        i = 0
        while not stop.is_set():
            await write(hs, put(10_000 * w + i))
            written += 1
            i += 1

    try:
        await poll(lambda: leader_of(hs), 10, "a leader")
        await write(hs, C.encode(C.create_namespace("ns", 4, "l2", 1, "ns")))
        writers = [asyncio.create_task(writer(w)) for w in range(8)]
        await poll(lambda: written >= 200 or None, 30, "the load to run")
        moved = []
        for _ in range(3):
            old = leader_of(hs)
            assert old is not None
            target = next(n for n in hs if n != old)
            before = written
            assert await hs[old].transfer_leadership(0, target) is None
            await poll(lambda t=target: leader_of(hs) == t or None, 5,  # type: ignore[misc]
                       f"leadership to move to {target} under load", lambda: state(hs))
            moved.append((old, target, written - before))
        stop.set()
        await asyncio.gather(*writers)
        return {"moved": moved, "written": written}
    finally:
        stop.set()
        for h in hs.values():
            h.stop()


def test_leadership_moves_under_a_steady_write_load(tmp_path) -> None:
    """The target of a transfer is always a few entries behind a loaded leader:
    the leader holds new proposals until it has caught up, then sends TimeoutNow."""
    out = asyncio.run(transfer_under_load(str(tmp_path)))
    assert len(out["moved"]) == 3, out
    assert out["written"] > 200, out


async def rejoin_scenario(tmp: str) -> dict[str, Any]:
    """A fresh learner replays the group's log from the start, membership entries
    about earlier incarnations of node ids included (jepsen_like track record #11)."""
    # No compaction: the learner must replay the log, not install a snapshot.
    timing = RaftTiming(compaction_entries=1_000_000, compaction_seconds=3600)
    hs, _ = await three_and_a_spare(tmp, timing)
    try:
        await write(hs, C.encode(C.create_namespace("ns", 4, "l2", 1, "ns")))

        def voters() -> list[str]:
            return [n for n in hs if 0 in hs[n].replicas and not hs[n].replicas[0].learner
                    and not hs[n].replicas[0].removed]

        async def join(n: str) -> None:
            assert await hs[n].create_replica(0, voters(), learner=True)
            for v in voters():
                assert await hs[v].add_learner(0, n)
            ln = await poll(lambda: leader_of(hs), 10, "a leader")
            await poll(lambda: hs[n].replicas[0].raftLastApplied
                       >= hs[ln].replicas[0].raftCommitIndex or None, 20,
                       f"{n}'s learner to catch up", lambda: state(hs))
            await asyncio.wait_for(hs[ln].change_membership(0, "add", n), 10)

        async def leave(n: str) -> None:
            ln = await poll(lambda: leader_of(hs), 10, "a leader")
            assert ln != n
            try:
                await asyncio.wait_for(hs[ln].change_membership(0, "rem", n), 10)
            except TimeoutError:
                raise AssertionError(f"rem {n} never committed: {state(hs)}") from None
            await poll(lambda: all(n not in hs[v].replicas[0].members() for v in voters()
                                   if v != n) or None, 10, f"{n} to leave every voter's config")
            assert await hs[n].drop_replica(0)

        async def lead(n: str) -> None:
            deadline = time.monotonic() + 15
            while leader_of(hs) != n:
                ln = leader_of(hs)
                if ln is not None:
                    await hs[ln].transfer_leadership(0, n)
                assert time.monotonic() < deadline, f"leadership never moved to {n}"
                await asyncio.sleep(0.05)

        for i in range(5):
            await write(hs, put(i))
        await join("n4")      # add n4
        await leave("n4")     # rem n4 (this incarnation of n4 is gone)
        # More entries than one append carries between that removal and the
        # re-add, so a learner replaying them waits on the leader for the rest.
        for i in range(100, 400):
            await write(hs, put(i))
        await join("n4")      # add n4 (a new one)
        await lead("n4")
        await leave("n3")     # rem n3
        for i in range(5, 10):
            await write(hs, put(i))
        # A fresh n3 learner replays all of it, "rem n4" too, while n4 leads.
        assert await hs["n3"].create_replica(0, voters(), learner=True)
        for v in voters():
            assert await hs[v].add_learner(0, "n3")
        r3 = hs["n3"].replicas[0]
        lead4 = hs["n4"].replicas[0]
        deadline = time.monotonic() + 15
        while r3.raftLastApplied < lead4.raftCommitIndex and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {"applied": r3.raftLastApplied, "commit": lead4.raftCommitIndex,
                "installed": r3.snapshots_installed, "leader": leader_of(hs)}
    finally:
        for h in hs.values():
            h.stop()


def test_a_fresh_learner_replaying_an_old_removal_of_the_leader_catches_up(tmp_path) -> None:
    out = asyncio.run(rejoin_scenario(str(tmp_path)))
    assert out["installed"] == 0, out  # the log was replayed, not a snapshot installed
    assert out["leader"] == "n4", out
    assert out["applied"] >= out["commit"], out
