"""Leases across leadership transfers: at no instant may two replicas of a group
both be allowed to serve lease reads.

A lease read asks ``GroupHost.lease_valid``. The lease's time bound is
published with the host's status every few milliseconds; a transfer gives the
lease up when the leader sends TimeoutNow, and the target can win, get its own
lease and commit before the next publication. A watcher thread samples every
host's answer as fast as it can while leadership moves back and forth under a
write load, and counts the samples where two hosts said yes (docs/jepsen.md,
track record #13).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from raftmem import commands as C
from tests.cluster.test_hardening import poll
from tests.cluster.test_membership import (
    TIMING,
    leader_of,
    state,
    three_and_a_spare,
    three_hosts,
    write,
)
from tests.cluster.test_snapshots import put

TRANSFERS = 12  # at least, and until the published-only check was seen to overlap
MAX_TRANSFERS = 30


def watch(hs: dict[str, Any], stop: threading.Event, out: dict[str, Any]) -> None:
    """Sample which hosts would serve a lease read of group 0, until ``stop``;
    the counts in ``out`` are kept current."""
    out.update(samples=0, overlaps=0, published_overlaps=0)
    while not stop.is_set():
        holders = [n for n, h in hs.items() if h.lease_valid(0)]
        # What the published status alone says: the check before the live one,
        # kept to show that this watcher sees the hazard when it is there.
        now = time.monotonic()
        published = [n for n, h in hs.items()
                     if (st := h.status().get(0)) is not None and st["role"] == "leader"
                     and now < st["lease_until"]]
        out["samples"] += 1
        if len(holders) > 1:
            out["overlaps"] += 1
            out.setdefault("first_overlap", holders)
        if len(published) > 1:
            out["published_overlaps"] += 1
        time.sleep(0.0002)


async def handovers(tmp: str) -> dict[str, Any]:
    hs = three_hosts(tmp)
    stop = asyncio.Event()
    halt = threading.Event()
    seen: dict[str, Any] = {}
    watcher = threading.Thread(target=watch, args=(hs, halt, seen), daemon=True)

    async def writer(w: int) -> None:
        i = 0
        while not stop.is_set():
            await write(hs, put(10_000 * w + i))
            i += 1

    try:
        await poll(lambda: leader_of(hs), 10, "a leader")
        await write(hs, C.encode(C.create_namespace("ns", 4, "l2", 1, "ns")))
        writers = [asyncio.create_task(writer(w)) for w in range(4)]
        watcher.start()
        moved = 0
        for k in range(MAX_TRANSFERS):
            if moved >= TRANSFERS and seen["published_overlaps"]:
                break
            old = await poll(lambda: leader_of(hs), 10, "a leader")
            # The old leader must hold a lease first, or there is nothing to hand over.
            await poll(lambda o=old: hs[o].lease_valid(0) or leader_of(hs) != o or None,
                       5, "a lease on the leader")
            if leader_of(hs) != old:
                continue
            target = sorted(n for n in hs if n != old)[k % 2]
            if await hs[old].transfer_leadership(0, target) is not None:
                continue
            await poll(lambda t=target: leader_of(hs) == t or None, 5,  # type: ignore[misc]
                       f"leadership to move to {target}", lambda: state(hs))
            # Let the new leader take its lease before the next move.
            await poll(lambda t=target: hs[t].lease_valid(0) or leader_of(hs) != t or None,
                       5, "a lease on the new leader")
            moved += 1
        stop.set()
        await asyncio.gather(*writers)
        halt.set()
        watcher.join(5)
        return {**seen, "moved": moved}
    finally:
        stop.set()
        halt.set()
        if watcher.is_alive():
            watcher.join(5)
        for h in hs.values():
            h.stop()


def test_no_two_replicas_hold_a_lease_across_transfers(tmp_path) -> None:
    out = asyncio.run(handovers(str(tmp_path)))
    print(out)
    assert out["moved"] >= TRANSFERS, out
    # Never two replicas that would serve a lease read. (The published status
    # alone shows two leases at once in most runs — ``published_overlaps`` —
    # and this assertion fails when GroupHost.lease_valid skips the live
    # check; the count is printed, not asserted: on a loaded machine a run of
    # 60 transfers can miss the few-millisecond window.)
    assert out["overlaps"] == 0, out


async def cut_off_with_a_learner(tmp: str) -> dict[str, Any]:
    """The leader loses both other voters but still reaches a learner: the learner's
    acknowledgements must not keep its lease (or its ReadIndex quorum) alive."""
    hs, _ = await three_and_a_spare(tmp)
    first = ["n1", "n2", "n3"]
    try:
        await write(hs, C.encode(C.create_namespace("ns", 4, "l2", 1, "ns")))
        assert await hs["n4"].create_replica(0, list(first), learner=True)
        for n in first:
            assert await hs[n].add_learner(0, "n4")
        old = await poll(lambda: leader_of(hs), 10, "a leader")
        await poll(lambda: hs["n4"].replicas[0].raftLastApplied
                   >= hs[old].replicas[0].raftCommitIndex or None, 20, "the learner to catch up")
        old = await poll(lambda: (n := leader_of(hs)) and hs[n].lease_valid(0) and n, 10,
                         "a leader holding a lease")
        others = [n for n in first if n != old]
        cut_at = time.monotonic()
        hs[old].isolate(others, silent=True)
        for n in others:
            hs[n].isolate([old], silent=True)
        # No voter acknowledges a heartbeat sent after the cut, so the old
        # leader's lease must end within election_min of it, however long it
        # still believes it leads (the learner keeps acknowledging).
        r_old = hs[old].replicas[0]
        latest = float("-inf")
        while r_old._isLeader() and time.monotonic() < cut_at + 2:
            latest = max(latest, r_old.lease_until())
            await asyncio.sleep(0.002)
        new = await poll(lambda: next((n for n in others if hs[n].replicas[0]._isLeader()
                                       and hs[n].lease_valid(0)), None), 10,
                         "a new leader with a lease among the others")
        # Both leases at once, over a few heartbeats of the old leader's.
        both = 0
        for _ in range(50):
            both += hs[old].lease_valid(0) and hs[new].lease_valid(0)
            await asyncio.sleep(0.01)
        return {"old": old, "new": new, "both": both,
                "lease_past_cut": latest - cut_at, "limit": TIMING.election_min + 0.05}
    finally:
        for h in hs.values():
            h.stop()


def test_a_learners_acks_do_not_keep_a_cut_off_leaders_lease(tmp_path) -> None:
    out = asyncio.run(cut_off_with_a_learner(str(tmp_path)))
    assert out["lease_past_cut"] <= out["limit"], out
    assert out["both"] == 0, out
