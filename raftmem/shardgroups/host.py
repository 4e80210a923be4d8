"""Group host: the raft thread of a node and the replicas it drives.

This package is the only importer of pysyncobj. A node process has one
``GroupHost``: one thread that polls the multiplexed transport, ticks every
local group replica (pysyncobj with ``autoTick=False``), makes journals
durable, and only then flushes outgoing messages. Apply runs on this thread,
so each group's SQLite writer connection is used by exactly one thread.

Proposals come from the asyncio side through :meth:`GroupHost.propose`, which
returns an ``asyncio.Future`` settled from this thread; the caller owns the
deadline (pysyncobj can lose callbacks — see docs/consensus.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson
import structlog
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.journal import FileJournal
from pysyncobj.syncobj import _COMMAND_TYPE

from raftmem.errors import CorruptionError
from raftmem.shardgroups import wire
from raftmem.shardgroups.transport import GroupTransport, Mux, PeerNode
from raftmem.statemachine import StateMachine

log = structlog.get_logger("raftmem.host")


# Our fixes of pysyncobj defects (docs/consensus.md), all on by default; tests
# switch them off one by one to reproduce a defect against bare pysyncobj.
HARDENING = frozenset({"stale_acks", "prevote", "commit_hint", "compaction_guard",
                       "single_change"})


# A leadership transfer holds proposals only for a target at most this many
# entries behind the leader's log.
TRANSFER_MAX_GAP = 256


@dataclass(frozen=True)
class RaftTiming:
    """Raft timing for a LAN. Failover after ``kill -9`` of a leader is about
    ``election_min``..``election_max`` plus one round trip."""

    election_min: float = 0.25
    election_max: float = 0.5
    heartbeat: float = 0.05
    # How long a leader keeps leading without hearing from a majority. pysyncobj's
    # default (30 s) lets a partitioned leader believe it leads for 30 s.
    leader_fallback: float = 0.5
    # Lease reads assume clocks run at the same rate within this bound: a lease
    # lasts election_min * (1 - drift) from the send time of the heartbeat a
    # majority acknowledged.
    lease_drift: float = 0.1
    # A ReadIndex request that is not answered within this time fails (the
    # node then falls back to a read barrier through the log).
    read_index_timeout: float = 1.0
    compaction_entries: int = 20_000
    compaction_seconds: int = 600
    # pysyncobj counts entries only, and keeps the whole log in memory: a bulk
    # load of 1,000-memory batches is a few hundred entries but gigabytes.
    compaction_bytes: int = 64 * 1024 * 1024


class Outcome:
    """How a proposal ended, as pysyncobj reports it, sorted into definite or not."""

    # Never appended to any log: safe to retry with anything.
    DEFINITE: ClassVar[dict[int, str]] = {
        FAIL_REASON.QUEUE_FULL: "overloaded",
        FAIL_REASON.MISSING_LEADER: "no_leader",
        FAIL_REASON.NOT_LEADER: "not_leader",
        FAIL_REASON.REQUEST_DENIED: "denied",
        # The entry at our index was replaced by another term's entry: ours
        # is gone and pysyncobj never re-proposes it.
        FAIL_REASON.DISCARDED: "discarded",
    }
    # May have been appended and may still commit.
    INDEFINITE: ClassVar[dict[int, str]] = {
        FAIL_REASON.LEADER_CHANGED: "leader_changed",
        FAIL_REASON.UNKNOWN_OUTCOME: "unknown_outcome",
    }


ReadIndexCallback = Callable[[int | None, str | None], None]


class ProposalFailed(Exception):
    def __init__(self, reason: str, definite: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.definite = definite


class GroupReplica(SyncObj):  # type: ignore[misc]
    """One replica of one shard group: pysyncobj below, our state machine above."""

    def __init__(
        self,
        group_id: int,
        node_id: str,
        peers: list[str],
        data_dir: str,
        transport: GroupTransport,
        timing: RaftTiming,
        sm_factory: Callable[[str], Any] = StateMachine,
        hardening: frozenset[str] = HARDENING,
        unsafe_lease: bool = False,
        learner: bool = False,
        learners: Iterable[str] = (),
    ) -> None:
        os.makedirs(data_dir, exist_ok=True)
        self.group_id = group_id
        # Membership (docs/placement.md). A learner replica receives the log but
        # never campaigns; it becomes a voter when the membership entry adding
        # it reaches it. A removed replica stops campaigning likewise.
        self.learner = learner
        self.removed = False
        self.learners: set[str] = set()
        self._transfer_term: int | None = None
        self._transfer_from: tuple[str, int] = ("", -1)
        self._transfer_pending: tuple[str, int, float, bool] | None = None
        self._lease_revoked_term = -1
        self.transfers_started = 0
        self.prevotes_started = 0
        self.held_entries_skipped = 0
        # The last applied Raft entry readers can see: pysyncobj's raftLastApplied
        # as of the end of the last tick, once that tick's group commit is done
        # (mid-tick, raftLastApplied runs ahead of the database). pysyncobj's own
        # entries (no-ops, membership changes) never reach the state machine, so
        # the state machine's applied index alone would stop short of them.
        self.visible_applied = 0
        self.sm = sm_factory(os.path.join(data_dir, "state.db"))
        # A state machine with ``flush`` (raftmem's) commits the entries applied
        # in one tick together; the host flushes before anything can observe
        # them (GroupHost._tick). Others commit each entry as they apply it.
        self.flush_applied: Callable[[], None] = getattr(self.sm, "flush", _nothing)
        if self.flush_applied is not _nothing:
            self.sm.group_commit = True
        self.failed: str | None = None
        self.journal_path = os.path.join(data_dir, "raft.journal")
        self.snapshot_path = os.path.join(data_dir, "raft.snapshot")
        self._snapshot_thread: threading.Thread | None = None
        self._snapshot_result: int | None = None  # a SERIALIZER_STATE, reported once
        self._snapshot_index = 0  # the log index the snapshot in progress covers
        self.compactions_refused = 0
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        self.last_snapshot_seconds = 0.0
        conf = SyncObjConf(
            autoTick=False,
            appendEntriesUseBatch=False,
            raftMinTimeout=timing.election_min,
            raftMaxTimeout=timing.election_max,
            appendEntriesPeriod=timing.heartbeat,
            leaderFallbackTimeout=timing.leader_fallback,
            connectionTimeout=max(timing.election_max, 1.0),
            commandsWaitLeader=False,
            journalFile=self.journal_path,
            fullDumpFile=os.path.join(data_dir, "raft.snapshot"),
            serializer=self._write_snapshot,
            deserializer=self._read_snapshot,
            serializeChecker=self._snapshot_progress,
            useFork=False,
            logCompactionMinEntries=timing.compaction_entries,
            logCompactionMinTime=timing.compaction_seconds,
            # One server at a time, through the log (Raft's single-server
            # changes); pysyncobj applies a change when it is appended. Learners,
            # catch-up before voting and one change in flight are ours.
            dynamicMembershipChange=True,
        )
        others = [PeerNode(p) for p in peers if p != node_id]
        super().__init__(PeerNode(node_id), others, conf, transport=transport, nodeClass=PeerNode)
        self._deliver_to_raft = transport._onMessageReceivedCallback
        transport.setOnMessageReceivedCallback(self._on_message)
        self.hardening = hardening
        # Test only: serve lease reads even without the protections that make
        # them safe (jepsen_like's bug injection).
        self.unsafe_lease = unsafe_lease
        self.timing = timing
        self.stale_acks_ignored = 0
        self.rejections_hinted = 0
        self.votes_refused = 0
        self.elections_started = 0
        self._leader_contact = float("-inf")
        self._prevote_term: int | None = None
        self._prevote_grants: set[str] = set()
        self._prevote_won = False
        # Leader lease: heartbeat sequence numbers ride on append-entries, the
        # follower echoes the last one it accepted in its ack.
        self._hb_seq = 0
        self._hb_sent: dict[int, float] = {}
        self._hb_acked: dict[str, float] = {}
        self._hb_to_ack: dict[str, int] = {}
        self._lease_term = -1
        # ReadIndex (docs/consistency.md): reads confirmed on the leader, reads
        # this replica asked its leader for, reads waiting for the local apply.
        self._ri_confirm: list[tuple[float, int, int, ReadIndexCallback]] = []
        self._ri_asked: dict[int, tuple[float, str, ReadIndexCallback]] = {}
        self._ri_apply: list[tuple[int, float, ReadIndexCallback]] = []
        self._ri_seq = 0
        self._ri_forced_at = float("-inf")
        self.read_index_heartbeats = 0
        transport.outgoing_hook = self._on_send
        self._synced_len = -1
        self._synced_last: Any = None
        self._synced_term: tuple[int, Any] = (-1, None)
        for node_id_ in learners:
            self.add_learner(node_id_)

    @property
    def _others(self) -> list[str]:
        """The other voters, as this replica's configuration says now."""
        return [str(n.id) for n in self._SyncObj__otherNodes]

    @replicated  # type: ignore[misc]
    def _apply(self, payload: bytes) -> dict[str, Any]:
        # pysyncobj increments raftLastApplied after this returns, so the
        # entry being applied is the next one.
        index = self.raftLastApplied + 1
        result = self.sm.apply(index, payload)
        # The entry's index, for session tokens (not stored: a deduplicated
        # retry reports its own, later, index — still one that covers the write).
        return {**result, "raft_index": index}

    def _on_message(self, node: Any, message: dict[str, Any]) -> None:
        """Every Raft message for this replica passes here first (the hardening seam).

        It runs on the host's one Raft thread, inside the transport's poll: an
        exception here fail-stops this replica (as one in its tick does) instead
        of ending the thread, and with it every group of the node."""
        if self.failed is not None:
            return
        try:
            self._handle_message(node, message)
        except Exception as e:  # noqa: BLE001 - any failure fail-stops this replica alone
            self.fail_stop(e, "message handling failed")

    def fail_stop(self, e: Exception, what: str) -> None:
        """Stop this replica for good (it serves and applies nothing more): a
        CorruptionError (an entry it cannot apply deterministically), or ``what``."""
        if isinstance(e, CorruptionError):
            self.failed = f"corruption: {e}"
            log.critical("replica_fail_stop", group=self.group_id, error=str(e))
        else:
            self.failed = f"{what}: {e!r}"
            log.critical("replica_fail_stop", group=self.group_id, error=repr(e), exc_info=e)

    def _handle_message(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "rm_ri" or kind == "rm_ri_resp":
            self._on_read_index_message(node, message)
            return
        if kind == "rm_timeout_now":
            self._on_timeout_now(node, message)
            return
        if kind == "apply_command" and self._transfer_pending is not None:
            # A follower's forwarded proposal during a leadership transfer:
            # refused (definite; the node retries), as our own are.
            self._SyncObj__transport.send(node, {
                "type": "apply_command_response", "request_id": message.get("request_id"),
                "error": FAIL_REASON.REQUEST_DENIED})
            return
        if (kind == "request_vote" or kind == "prevote") and not message.get("term_notice") \
                and str(node.id) not in self._others:
            # A learner, a removed replica or a stranger to this configuration
            # has no vote to ask for.
            return
        if kind == "append_entries" and message.get("term", -1) >= self.raftCurrentTerm:
            self._leader_contact = time.monotonic()
            # A live leader: a pre-vote won before this must not turn into a
            # campaign (our own vote is now promised to this leader, whose
            # lease may count on it).
            self._prevote_won = False
            if "stale_acks" in self.hardening and "prevLogIdx" in message \
                    and "transmission" not in message:
                message = self._skip_held_entries(message)
            if "rm_hb" in message:
                self._hb_to_ack[node.id] = message["rm_hb"]
        elif kind == "next_node_idx" and "rm_ack" in message:
            sent = self._hb_sent.get(message["rm_ack"])
            if sent is not None and sent > self._hb_acked.get(node.id, float("-inf")):
                self._hb_acked[node.id] = sent
        if "prevote" in self.hardening:
            if kind == "prevote":
                self._answer_prevote(node, message)
                return
            if kind == "prevote_resp":
                self._count_prevote(node, message)
                return
            if kind == "request_vote" and not message.get("term_notice") \
                    and not self._transfer_vote_allowed(message) and self._has_live_leader():
                # Leader stickiness: while this replica hears from a live leader
                # (or is it), it does not help depose it.
                self.votes_refused += 1
                return
            if kind == "request_vote" and message.get("term_notice"):
                # A notice of a newer term (below), not a candidacy: pysyncobj
                # adopts the term and steps down, but must not grant a vote. A
                # leader holding a lease would otherwise hand its own vote to
                # the sender, whose self-vote makes a majority of three while
                # that leader's lease still runs.
                message = {**message, "last_log_term": -1, "last_log_index": -1}
            if kind == "append_entries" and message.get("term", 0) < self.raftCurrentTerm:
                # A leader of an older term. pysyncobj ignores it silently; with
                # stickiness that can leave this replica (whose term grew while
                # it was cut off) outside the group for good: the old leader
                # keeps a majority at its term and never hears of ours. Tell it
                # our term, as etcd does with pre-vote and check-quorum; it
                # steps down and the group elects a leader at the newer term.
                term, index = self._log_position()
                self._SyncObj__transport.send(node, {
                    "type": "request_vote", "term": self.raftCurrentTerm, "term_notice": True,
                    "last_log_index": index, "last_log_term": term})
                return
        if "stale_acks" in self.hardening and kind == "next_node_idx" \
                and message.get("success") and not message.get("reset") and self._isLeader():
            # Defect 1 of docs/consensus.md: a success ack carries no sequence
            # number, and pysyncobj sets nextIndex from any ack that raises
            # matchIndex, so an older ack arriving after newer entries were
            # sent rewinds nextIndex; the leader then re-sends, and followers
            # truncate and re-append entries they had already applied. A
            # success ack may only move nextIndex forward; a real gap is
            # reported with reset=True, which passes unchanged.
            next_index = self._SyncObj__raftNextIndex
            before = next_index.get(node)
            self._deliver_to_raft(node, message)
            if before is not None and next_index.get(node, before) < before:
                next_index[node] = before
                self.stale_acks_ignored += 1
            return
        self._deliver_to_raft(node, message)

    def _skip_held_entries(self, message: dict[str, Any]) -> dict[str, Any]:
        """Defect 1, follower side: an append that starts below our last entry.

        pysyncobj deletes every entry after ``prevLogIdx`` before appending,
        conflicting or not (Raft deletes only from the first conflict), so a
        re-sent or late append makes a follower drop and re-append entries it
        has applied — and undo and redo the membership changes among them.
        When our last entry has the sender's term, our whole log is a prefix of
        the sender's (one leader per term; log matching), so the part of the
        append we already hold can be skipped: the append then starts at our
        last entry and truncates nothing.
        """
        journal = self._SyncObj__raftLog
        if not len(journal):
            return message
        last_idx, last_term = journal[-1][1], journal[-1][2]
        if message["prevLogIdx"] >= last_idx or last_term != message.get("term") \
                or message["prevLogIdx"] < journal[0][1]:
            return message
        entries = message.get("entries") or []
        newer = [e for e in entries if e[1] > last_idx]
        self.held_entries_skipped += len(entries) - len(newer)
        return {**message, "prevLogIdx": last_idx, "prevLogTerm": last_term, "entries": newer}

    # -- leader lease ------------------------------------------------------

    def _on_send(self, node: Any, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "request_vote" and self._transfer_term is not None \
                and message.get("term") == self._transfer_term:
            # The campaign our leader asked for (leadership transfer): a voter
            # that follows that same leader, in that term, grants it although it
            # still hears it (that leader gave up its lease when it asked).
            message["transfer"] = list(self._transfer_from)
        if kind == "append_entries" and self._isLeader():
            if self._lease_term != self.raftCurrentTerm:
                self._lease_term = self.raftCurrentTerm
                self._hb_sent.clear()
                self._hb_acked.clear()
            self._hb_seq += 1
            self._hb_sent[self._hb_seq] = time.monotonic()
            message["rm_hb"] = self._hb_seq
            if len(self._hb_sent) > 4096:
                oldest = min(self._hb_acked.values(), default=0.0)
                self._hb_sent = {k: v for k, v in self._hb_sent.items() if v >= oldest}
        elif kind == "next_node_idx":
            seq = self._hb_to_ack.get(node.id)
            if seq is not None:
                message["rm_ack"] = seq
            if "commit_hint" in self.hardening and message.get("reset") \
                    and not message.get("success"):
                self._hint_from_commit(message)

    def _hint_from_commit(self, message: dict[str, Any]) -> None:
        """Point a rejecting reply at an index the leader's log is known to match.

        Defect 8 of docs/consensus.md. pysyncobj answers an append it cannot
        take with "send from my last index + 1" (log too short) or "send from
        ``prevLogIdx``" (term mismatch: one step back per round trip). A
        follower whose log ends in entries of a deposed leader's term needs
        one round trip per such entry with no other append in flight — but a
        leader under load advances ``nextIndex`` optimistically with every
        send, so the replies to the later appends ("log too short") keep
        resetting it past the conflict, and the follower never catches up.
        Every entry up to this replica's commit index is in every later
        leader's log (leader completeness), so "send from commit + 1" always
        matches in one round trip; entries between it and the conflict are
        re-sent, and the state machine skips the ones it applied.
        """
        journal = self._SyncObj__raftLog
        first = journal[0][1] if len(journal) else 0
        hint = max(self.raftCommitIndex + 1, first + 1)
        if hint < message["next_node_idx"]:
            message["next_node_idx"] = hint
            self.rejections_hinted += 1

    # -- ReadIndex ---------------------------------------------------------
    #
    # A linearizable read needs (1) an index that covers every write
    # acknowledged before the read arrived, and (2) the certainty that the
    # replica handing out that index was still the leader when it did. The
    # leader takes its commit index when the read reaches it (its term's no-op
    # applied, so that index covers everything committed by earlier leaders)
    # and holds the read until a majority, itself included, has acknowledged
    # a heartbeat sent *after* that moment: no other leader can have been
    # elected before those acknowledgements, so nothing was committed beyond
    # the index elsewhere. The replica serving the read then waits until it
    # has applied that index. No log entry, no fsync, no clock assumptions.

    def read_index(self, callback: ReadIndexCallback) -> None:
        """Raft thread: ``callback(index, None)`` once this replica may serve a
        linearizable read from local state at ``index``; ``callback(None, reason)``
        if it cannot (no leader, leadership lost, timed out)."""
        now = time.monotonic()

        def then_apply(index: int | None, err: str | None) -> None:
            if index is None:
                callback(None, err)
            else:
                self._ri_apply.append((index, now, callback))

        if self._isLeader():
            self._ri_begin(now, then_apply)
            return
        leader = self._getLeader()
        if leader is None:
            callback(None, "no_leader")
            return
        self._ri_seq += 1
        self._ri_asked[self._ri_seq] = (now, str(leader.id), then_apply)
        self._SyncObj__transport.send(leader, {"type": "rm_ri", "id": self._ri_seq})

    def _ri_begin(self, now: float, callback: ReadIndexCallback) -> None:
        if not self.noop_applied():
            callback(None, "leader_not_ready")
            return
        self._ri_confirm.append((now, self.raftCommitIndex, self.raftCurrentTerm, callback))

    def _on_read_index_message(self, node: Any, message: dict[str, Any]) -> None:
        if message["type"] == "rm_ri":
            rid = message.get("id")

            def answer(index: int | None, err: str | None) -> None:
                self._SyncObj__transport.send(
                    node, {"type": "rm_ri_resp", "id": rid, "index": index, "error": err})

            if self._isLeader():
                self._ri_begin(time.monotonic(), answer)
            else:
                answer(None, "not_leader")
            return
        asked = self._ri_asked.pop(message.get("id", -1), None)
        if asked is not None:
            index = message.get("index")
            asked[2](index if isinstance(index, int) else None,
                     None if isinstance(index, int) else str(message.get("error")))

    def read_index_tick(self, timeout: float) -> None:
        """Raft thread, every loop iteration: confirm, forward and complete reads."""
        if not (self._ri_confirm or self._ri_asked or self._ri_apply):
            return
        now = time.monotonic()
        if self._ri_confirm:
            self._ri_confirm_tick(now, timeout)
        if self._ri_asked:
            leader = self._getLeader()
            leader_id = None if leader is None else str(leader.id)
            for rid, (t, asked, cb) in list(self._ri_asked.items()):
                if asked != leader_id or now - t > timeout:
                    del self._ri_asked[rid]
                    cb(None, "leader_changed" if asked != leader_id else "timeout")
        if self._ri_apply:
            applied = self.visible_applied  # committed: what a reader will see
            waiting = []
            for index, t, cb in self._ri_apply:
                if applied >= index:
                    cb(index, None)
                elif now - t > timeout:
                    cb(None, "apply_timeout")
                else:
                    waiting.append((index, t, cb))
            self._ri_apply = waiting

    def _ri_confirm_tick(self, now: float, timeout: float) -> None:
        term = self.raftCurrentTerm
        if not self._isLeader():
            pending, self._ri_confirm = self._ri_confirm, []
            for _t, _i, _term, cb in pending:
                cb(None, "not_leader")
            return
        confirmed = self._quorum_heard_at()
        waiting = []
        newest = float("-inf")
        for item in self._ri_confirm:
            t, index, t_term, cb = item
            if t_term != term:
                cb(None, "not_leader")
            elif confirmed > t:
                cb(index, None)
            elif now - t > timeout:
                cb(None, "timeout")
            else:
                waiting.append(item)
                newest = max(newest, t)
        self._ri_confirm = waiting
        if waiting and self._ri_forced_at < newest:
            # Heartbeats sent after the newest waiting read; their acks confirm
            # every read waiting now. One round per loop iteration at most.
            self._ri_forced_at = now
            self.read_index_heartbeats += 1
            self._SyncObj__sendAppendEntries()

    def lease_until(self) -> float:
        """Monotonic time until which no other leader can exist, or -inf.

        A majority (this leader included) acknowledged a heartbeat sent at time
        ``s``; each of those followers heard from us after ``s`` and, by leader
        stickiness and pre-vote, will not help elect anyone before
        ``s + election_min``. Without those protections there is no lease.
        """
        if not self._isLeader() or self._lease_term != self.raftCurrentTerm:
            return float("-inf")
        if self._lease_revoked_term == self.raftCurrentTerm:
            # Leadership is being handed over: the target's campaign bypasses
            # the stickiness the lease rests on.
            return float("-inf")
        if "prevote" not in self.hardening and not self.unsafe_lease:
            return float("-inf")
        t = self.timing
        return self._quorum_heard_at() + t.election_min * (1.0 - t.lease_drift)

    def lease_holds(self, term: int) -> bool:
        """Any thread: still the leader of ``term``, its lease not given up.

        ``lease_until`` is published with the host's status every few
        milliseconds; its time bound stays sound while it ages, but a lease
        given up for a transfer, or a step-down, is not a matter of time: the
        target can win and commit before the next publication. A lease read
        checks this live as well."""
        return (self._isLeader() and self.raftCurrentTerm == term
                and self._lease_revoked_term != term)

    def _quorum_heard_at(self) -> float:
        """Send time of the newest heartbeat of this term that a majority, this
        leader included, has acknowledged: ``inf`` alone, ``-inf`` if none yet.
        The common ground of leases and ReadIndex."""
        others = self._others
        needed = (len(others) + 1) // 2  # acks besides our own
        if needed == 0:
            return float("inf")
        # Voters only: a learner (fed the same appends) acknowledges heartbeats
        # too, and its ack promises nothing about elections.
        acked = [t for n, t in self._hb_acked.items() if n in others]
        if self._lease_term != self.raftCurrentTerm or len(acked) < needed:
            return float("-inf")
        return sorted(acked, reverse=True)[needed - 1]

    def noop_applied(self) -> bool:
        noop = self._SyncObj__noopIDx
        return self._isLeader() and noop is not None and self.visible_applied >= noop

    # -- pre-vote (defect 4) ----------------------------------------------
    #
    # pysyncobj campaigns as soon as its election timer fires, with a higher
    # term, and every follower grants at once: a replica that was partitioned
    # away comes back with an inflated term and deposes a healthy leader. Here
    # a replica whose timer fired first asks its peers whether they would vote
    # (without changing any term); only when a majority, itself included,
    # says yes does pysyncobj get to campaign. A peer says yes only if it has
    # not heard from a live leader for the minimum election timeout and the
    # asker's log is at least as up to date as its own.

    def _has_live_leader(self) -> bool:
        if self._isLeader():
            return True
        return time.monotonic() - self._leader_contact < self.timing.election_min

    def _log_position(self) -> tuple[int, int]:
        last = self._SyncObj__raftLog[-1]
        return last[2], last[1]  # (term, index)

    def _answer_prevote(self, node: Any, message: dict[str, Any]) -> None:
        up_to_date = (message["last_log_term"], message["last_log_index"]) >= self._log_position()
        granted = (not self._has_live_leader() and up_to_date
                   and message["term"] > self.raftCurrentTerm)
        self._SyncObj__transport.send(node, {"type": "prevote_resp", "term": message["term"],
                                             "granted": granted})

    def _count_prevote(self, node: Any, message: dict[str, Any]) -> None:
        if message.get("term") != self._prevote_term or not message.get("granted"):
            return
        self._prevote_grants.add(node.id)
        if not self._prevote_won and len(self._prevote_grants) > (len(self._others) + 1) / 2:
            self._prevote_won = True
            self._SyncObj__raftElectionDeadline = 0.0  # campaign on this tick

    def gate_election(self) -> None:
        """Called before each tick: let pysyncobj campaign only after a won pre-vote."""
        now = time.monotonic()
        if (self.learner or self.removed) and not self._isLeader():
            # Non-voters never campaign.
            self._SyncObj__raftElectionDeadline = now + self.timing.election_max
            return
        if self._transfer_term is not None:
            if self._transfer_term == self.raftCurrentTerm + 1 \
                    and self._SyncObj__raftElectionDeadline <= now:
                return  # campaign now, without pre-vote (our leader asked)
            if self._transfer_term <= self.raftCurrentTerm:
                self._transfer_term = None
        if "prevote" not in self.hardening or self._isLeader() or not self._others:
            return
        if self._SyncObj__raftElectionDeadline > now:
            return
        if self._prevote_won and self._prevote_term == self.raftCurrentTerm + 1:
            self._prevote_won = False
            self._prevote_term = None
            if now - self._leader_contact < self.timing.election_min:
                # A leader was heard after the pre-vote began: our own vote
                # belongs to it as surely as any follower's (its lease counts on
                # our ack), so no campaign; the next one starts from scratch.
                self._SyncObj__raftElectionDeadline = now + self.timing.election_min + (
                    self.timing.election_max - self.timing.election_min) * random.random()
                return
            self.elections_started += 1
            return  # the deadline stays passed: pysyncobj campaigns now
        term, index = self._log_position()
        self.prevotes_started += 1
        self._prevote_term = self.raftCurrentTerm + 1
        self._prevote_grants = {str(self.selfNode.id)}
        self._prevote_won = False
        transport = self._SyncObj__transport
        for peer in self._SyncObj__otherNodes:
            transport.send(peer, {"type": "prevote", "term": self._prevote_term,
                                  "last_log_index": index, "last_log_term": term})
        t = self.timing
        self._SyncObj__raftElectionDeadline = now + t.election_min + (
            t.election_max - t.election_min) * random.random()

    # -- membership (docs/placement.md) -----------------------------------

    def members(self) -> list[str]:
        """The voters of this replica's current configuration (itself included,
        unless it is a learner or was removed)."""
        mine = [] if (self.learner or self.removed) else [str(self.selfNode.id)]
        return sorted(mine + self._others)

    def add_learner(self, node_id: str) -> None:
        """Replicate to ``node_id`` without counting it for quorum or votes
        (pysyncobj's read-only-node path). Held on every voter, so that any
        leader of the group keeps feeding it."""
        node = PeerNode(node_id)
        if node_id == str(self.selfNode.id) or node in self._SyncObj__otherNodes:
            return
        self.learners.add(node_id)
        self._SyncObj__transport.addNode(node)
        readonly = self._SyncObj__readonlyNodes
        if node not in readonly:
            readonly.add(node)
            self._SyncObj__raftNextIndex[node] = self._SyncObj__getCurrentLogIndex() + 1
            self._SyncObj__raftMatchIndex[node] = 0
            self._SyncObj__lastResponseTime[node] = time.monotonic()

    def match_indexes(self) -> dict[str, int]:
        """Leader only: how far each voter and learner's log is known to match ours."""
        if not self._isLeader():
            return {}
        return {str(n.id): int(i) for n, i in self._SyncObj__raftMatchIndex.items()}

    def change_membership(self, action: str, node_id: str,
                          callback: Callable[[Any, int], None]) -> None:
        """Leader: append the entry adding or removing one voter (``action``
        "add" or "rem"). Refused (REQUEST_DENIED) while another change is not
        committed, for the leader itself, or for a no-op change."""
        if action not in ("add", "rem"):
            raise ValueError(f"unknown membership action {action!r}")
        # A plain [action, id] request: pysyncobj builds the node with our
        # node class, so no object is pickled into the log.
        self._applyCommand(pickle.dumps([action, node_id]), callback, _COMMAND_TYPE.MEMBERSHIP)

    def _membership_change_pending(self) -> bool:
        journal = self._SyncObj__raftLog
        commit = self.raftCommitIndex
        for i in range(len(journal) - 1, -1, -1):
            entry = journal[i]
            if entry[1] <= commit:
                break
            if entry[0][:1] == bytes([_COMMAND_TYPE.MEMBERSHIP]):
                return True
        return False

    def _SyncObj__changeCluster(self, request: list[Any]) -> bool:
        # Defect 6 of docs/consensus.md: pysyncobj never records the change in
        # flight, so it accepts a second before the first commits (3 -> 5
        # voters in one step). One at a time, as single-server changes require.
        if "single_change" in self.hardening and self._membership_change_pending():
            return False
        result: bool = SyncObj._SyncObj__changeCluster(self, request)
        return result

    def _SyncObj__doChangeCluster(self, request: list[Any], reverse: bool = False) -> bool:
        action, node_id = request[0], str(request[1])
        adding = (action == "add") != reverse
        if node_id == str(self.selfNode.id):
            # pysyncobj ignores changes naming this replica; we learn from them
            # whether we vote.
            if adding:
                self.learner = False
                self.removed = False
            elif action in ("add", "rem"):
                self.removed = True
            return False
        changed: bool = SyncObj._SyncObj__doChangeCluster(self, request, reverse)
        if adding and PeerNode(node_id) in self._SyncObj__otherNodes:
            node = PeerNode(node_id)
            self.learners.discard(node_id)
            self._SyncObj__readonlyNodes.discard(node)
        return changed

    # -- leadership transfer ----------------------------------------------

    def transfer_leadership(self, target: str) -> str | None:
        """Leader: hand leadership to the voter ``target`` (Raft's TimeoutNow).
        None when under way; otherwise why not (the caller retries later).

        The target must hold the leader's whole log first, or the voters would
        refuse it. Under a steady write load it is always a few entries behind,
        so, as etcd does, the leader takes no new proposals for a moment (they
        fail definitely, and the node retries them) until the target has
        caught up, then sends TimeoutNow; it gives up after ``transfer_wait``.
        """
        if not self._isLeader():
            return "not_leader"
        node = PeerNode(target)
        if node not in self._SyncObj__otherNodes:
            return "not_a_voter"
        behind = self._SyncObj__getCurrentLogIndex() - self._SyncObj__raftMatchIndex.get(node, 0)
        if behind > TRANSFER_MAX_GAP:
            # Holding proposals only pays when the target is a few entries
            # short; one still catching up (a snapshot, a long log) would stall
            # the group's writes for nothing, and the caller asks again.
            return "target_behind"
        self._transfer_pending = (target, self.raftCurrentTerm,
                                  time.monotonic() + self.timing.election_max * 2, False)
        self.transfer_tick()
        return None

    def transferring(self) -> bool:
        """A leadership transfer waits for its target: proposals are refused meanwhile."""
        return self._transfer_pending is not None

    def transfer_tick(self) -> None:
        """Raft thread, every loop iteration: send TimeoutNow once the target caught up."""
        pending = self._transfer_pending
        if pending is None:
            return
        target, term, deadline, sent = pending
        if not self._isLeader() or self.raftCurrentTerm != term or time.monotonic() > deadline:
            self._transfer_pending = None
            return
        node = PeerNode(target)
        if sent or self._SyncObj__raftMatchIndex.get(node, 0) < self._SyncObj__getCurrentLogIndex():
            return
        # Still no new proposals until the target's campaign ends this term (or
        # the deadline passes): an entry appended now would make our log longer
        # than the target's, and we would refuse it our vote.
        self._transfer_pending = (target, term, time.monotonic() + self.timing.election_max, True)
        self._lease_revoked_term = self.raftCurrentTerm
        self.transfers_started += 1
        self._SyncObj__transport.send(node, {"type": "rm_timeout_now",
                                             "term": self.raftCurrentTerm})

    def _transfer_vote_allowed(self, message: dict[str, Any]) -> bool:
        """A transfer's vote passes stickiness only at a voter whose own leader, in
        its current term, is the one that asked for the transfer (and revoked its
        lease doing so): the promise broken is then to a leader that gave it up.
        Any other voter keeps its promise to the leader it hears."""
        mark = message.get("transfer")
        if not isinstance(mark, list) or len(mark) != 2:
            return False
        from_id, from_term = mark
        if from_term != self.raftCurrentTerm:
            return False
        if self._isLeader():
            return str(self.selfNode.id) == from_id
        leader = self._getLeader()
        return leader is not None and str(leader.id) == from_id

    def _on_timeout_now(self, node: Any, message: dict[str, Any]) -> None:
        leader = self._getLeader()
        if self.learner or self.removed or self._isLeader() or leader is None \
                or str(leader.id) != str(node.id) or message.get("term") != self.raftCurrentTerm:
            return
        self._transfer_term = self.raftCurrentTerm + 1
        self._transfer_from = (str(node.id), self.raftCurrentTerm)
        self._SyncObj__raftElectionDeadline = 0.0
        # The leader's appends that arrive before our next tick must not push
        # the deadline back (pysyncobj's flag for its own transfers; cleared
        # when the campaign starts or a newer term is heard).
        self._SyncObj__transferInProgress = True

    # -- snapshots (log compaction) ---------------------------------------

    def _write_snapshot(self, tmp_path: str, data: Any) -> None:
        """Start a snapshot in the background; pysyncobj calls this on the raft thread.

        A copy of a large database takes long enough (0.4-0.7 s at 100k
        memories) to stall heartbeats and cause elections if done here. So
        this only hands pysyncobj a stand-in — a hard link to the current
        snapshot, which pysyncobj then renames over that same file, changing
        nothing — and copies the database on a thread of its own. The new
        snapshot replaces the old one atomically when complete, and
        ``_snapshot_progress`` reports success only then, so pysyncobj
        compacts the log only once a snapshot covering it exists. The copy may
        be of a later state than ``data`` names; installing it is still
        correct (its own applied index travels with it; see the state machine).
        """
        last_entry, prev_entry, cluster = data
        # The copy must hold at least the entries up to last_entry: commit them.
        self.flush_applied()
        self._snapshot_index = int(last_entry[1])
        meta = wire.encode([last_entry, prev_entry, sorted(str(n.id) for n in cluster)])
        # An exception here would leave pysyncobj's serializer marked busy for
        # good (no more compaction, no snapshot sends): leave nothing to fail on.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        if os.path.exists(self.snapshot_path):
            os.link(self.snapshot_path, tmp_path)
        else:
            open(tmp_path, "wb").close()
        self._snapshot_result = None
        self._snapshot_thread = threading.Thread(
            target=self._snapshot_worker, args=(meta,), name=f"snapshot-g{self.group_id}",
            daemon=True)
        self._snapshot_thread.start()

    def _snapshot_worker(self, meta: bytes) -> None:
        work = self.snapshot_path + ".writing"
        t0 = time.monotonic()
        try:
            self.sm.snapshot_to(work, meta)
            os.replace(work, self.snapshot_path)
            dfd = os.open(os.path.dirname(self.snapshot_path), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self.snapshots_taken += 1
            self.last_snapshot_seconds = time.monotonic() - t0
            self._snapshot_result = SERIALIZER_STATE.SUCCESS
            log.info("snapshot_written", group=self.group_id,
                     seconds=round(self.last_snapshot_seconds, 3))
        except Exception:
            log.exception("snapshot_failed", group=self.group_id)
            self._snapshot_result = SERIALIZER_STATE.FAILED

    def _snapshot_progress(self) -> int:
        thread = self._snapshot_thread
        if thread is None:
            return SERIALIZER_STATE.NOT_SERIALIZING
        if thread.is_alive():
            return SERIALIZER_STATE.SERIALIZING
        self._snapshot_thread = None
        result = self._snapshot_result if self._snapshot_result is not None \
            else SERIALIZER_STATE.FAILED
        journal = self._SyncObj__raftLog
        if result == SERIALIZER_STATE.SUCCESS and "compaction_guard" in self.hardening \
                and (not len(journal) or journal[-1][1] < self._snapshot_index):
            # Defect 2 of docs/consensus.md: the log was truncated below the
            # snapshot's index while the snapshot was written (a re-send, defect
            # 1); compacting up to that index now would leave pysyncobj an empty
            # log and an IndexError on every tick. The snapshot on disk is good;
            # only this compaction is skipped (the next one will do).
            self.compactions_refused += 1
            log.warning("compaction_refused", group=self.group_id,
                        snapshot_index=self._snapshot_index,
                        log_end=journal[-1][1] if len(journal) else None)
            return SERIALIZER_STATE.FAILED
        return result

    def _read_snapshot(self, path: str) -> tuple[Any, Any, list[PeerNode]]:
        if os.path.getsize(path) == 0:
            # The stand-in of a first snapshot that never completed (a crash
            # while it was written): there is no snapshot, the log is intact.
            raise FileNotFoundError("no snapshot yet")
        installed = self.sm.install_snapshot(path)
        self.snapshots_installed += int(installed)
        _, meta = self.sm.read_snapshot_meta(path)
        last_entry, prev_entry, cluster = wire.decode(meta)
        log.info("snapshot_loaded", group=self.group_id, installed=installed,
                 snapshot_index=last_entry[1], applied_index=self.sm.applied_index)
        # As nodes: pysyncobj drops this replica from the list by comparing nodes.
        return last_entry, prev_entry, [PeerNode(str(n)) for n in cluster]

    # -- durability -------------------------------------------------------

    def durability_work(self) -> list[Callable[[], None]]:
        """The syncs that make what this replica wrote since the last call durable.

        Entries: the journal is written through ``mmap``; ``fdatasync`` of its
        file flushes those pages too (on Linux ``msync(MS_SYNC)`` is an fsync
        of the same range) and measured 2.5x faster here than pysyncobj's
        ``mmap.flush()`` of the whole map. Term and vote: the ``.meta`` file and
        its directory. The host runs the syncs of all replicas at once.
        """
        journal = self._SyncObj__raftLog
        if not isinstance(journal, FileJournal):
            return []
        work: list[Callable[[], None]] = []
        n = len(journal)
        last = journal[-1][1:] if n else None
        if n != self._synced_len or last != self._synced_last:
            fd = journal._FileJournal__journalFile._ResizableFile__f.fileno()
            work.append(lambda: os.fdatasync(fd))
            self._synced_len, self._synced_last = n, last
        term_vote = (self.raftCurrentTerm, self._SyncObj__votedForNodeId)
        if term_vote != self._synced_term:
            meta = self.journal_path + ".meta"
            if os.path.exists(meta):
                work.append(lambda: _fsync_paths(meta, os.path.dirname(meta)))
            self._synced_term = term_vote
        return work

    def maybe_compact(self) -> None:
        """Ask pysyncobj for a snapshot when the log's bytes, not only its entries, grow large."""
        journal = self._SyncObj__raftLog
        if not isinstance(journal, FileJournal) or self._snapshot_thread is not None:
            return
        if journal._FileJournal__currentOffset > self.timing.compaction_bytes:
            self.forceLogCompaction()

    def status(self) -> dict[str, Any]:
        leader = self._getLeader()
        return {
            "group": self.group_id,
            "role": "leader" if self._isLeader() else "follower",
            "leader": None if leader is None else str(leader.id),
            "term": self.raftCurrentTerm,
            "commit_index": self.raftCommitIndex,
            "raft_applied_index": self.raftLastApplied,
            "applied_index": self.sm.applied_index,
            "ready": self.isReady(),
            "failed": self.failed,
            "lease_until": self.lease_until(),
            "noop_applied": self.noop_applied(),
            "leader_contact": self._leader_contact,
            "votes_refused": self.votes_refused,
            "stale_acks_ignored": self.stale_acks_ignored,
            "rejections_hinted": self.rejections_hinted,
            "read_index_heartbeats": self.read_index_heartbeats,
            "compactions_refused": self.compactions_refused,
            "members": self.members(),
            # A learner promoted by an entry this replica applied without a
            # change (pysyncobj already had the node) stays in the set: never
            # report a voter as a learner too.
            "learners": sorted(self.learners - set(self._others)),
            "learner": self.learner,
            "removed": self.removed,
            "match_index": self.match_indexes(),
            "last_log_index": self._log_position()[1] if len(self._SyncObj__raftLog) else None,
        }


@dataclass
class HostConfig:
    node_id: str
    raft_bind: tuple[str, int]
    peers: dict[str, tuple[str, int]]  # node id -> raft address, self included
    groups: dict[int, list[str]]  # group id -> replica node ids
    data_dir: str
    secret: bytes
    durable: bool = True
    timing: RaftTiming = field(default_factory=RaftTiming)
    # What each replica applies to; tests of the consensus layer pass a tiny one.
    sm_factory: Callable[[str], Any] = StateMachine
    # Our fixes of pysyncobj defects (docs/consensus.md); tests switch them off
    # to reproduce the defect against bare pysyncobj behaviour.
    hardening: frozenset[str] = HARDENING
    unsafe_lease: bool = False


class GroupHost:
    """The raft thread of a node and the group replicas it hosts.

    Which replicas a node hosts, and each one's membership as last seen, are
    kept in ``<data_dir>/replicas.json`` (written when they change): the
    cluster description's placement is only the starting point, the
    placement driver moves replicas at runtime (:meth:`create_replica`,
    :meth:`drop_replica`). The file is what a restart hosts again; each
    replica's log and snapshot then bring its configuration up to date.
    """

    def __init__(self, cfg: HostConfig) -> None:
        self.cfg = cfg
        self.mux = Mux(cfg.node_id, cfg.raft_bind, cfg.peers, cfg.secret)
        self.replicas: dict[int, GroupReplica] = {}
        # Bumped each time a group's replica is created here: readers of an
        # earlier replica's files must not be reused.
        self.generation: dict[int, int] = {}
        self._sm_lock = threading.Lock()
        self._layout_path = os.path.join(cfg.data_dir, "replicas.json")
        layout = self._load_layout()
        if layout is None:
            layout = {gid: {"members": list(m), "learner": False, "learners": []}
                      for gid, m in cfg.groups.items() if cfg.node_id in m}
        for gid, entry in sorted(layout.items()):
            self._open_replica(gid, entry["members"], entry.get("learner", False),
                               entry.get("learners", ()))
        self._layout_saved: dict[int, Any] = {}
        self._save_layout()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: dict[int, dict[str, Any]] = {}
        self._status_at = 0.0
        self.loop_iterations = 0
        self.fsyncs = 0
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._sync_pool = ThreadPoolExecutor(4, thread_name_prefix="fsync")
        # Proposal outcomes gathered during one loop iteration, handed to the
        # asyncio loop in one wake-up instead of one per proposal.
        self._outcomes: list[tuple[Callable[[Any, Any], None], Any, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def _replica_dir(self, gid: int) -> str:
        return os.path.join(self.cfg.data_dir, "groups", f"g{gid}")

    def _open_replica(self, gid: int, members: list[str], learner: bool,
                      learners: Iterable[str]) -> GroupReplica:
        cfg = self.cfg
        peers = sorted(set(members) | {cfg.node_id})
        t = self.mux.register(gid, peers)
        r = GroupReplica(
            gid, cfg.node_id, peers, self._replica_dir(gid), t, cfg.timing, cfg.sm_factory,
            cfg.hardening, cfg.unsafe_lease, learner=learner, learners=learners,
        )
        # Copy on write: the asyncio side reads this dict without a lock.
        self.replicas = {**self.replicas, gid: r}
        self.generation[gid] = self.generation.get(gid, 0) + 1
        return r

    def _load_layout(self) -> dict[int, dict[str, Any]] | None:
        try:
            with open(self._layout_path, "rb") as f:
                raw = orjson.loads(f.read())
        except FileNotFoundError:
            return None
        return {int(g): e for g, e in raw["groups"].items()}

    def _layout(self) -> dict[int, Any]:
        return {gid: {"members": r.members(), "learner": r.learner,
                      "learners": sorted(r.learners)} for gid, r in self.replicas.items()}

    def _save_layout(self) -> None:
        layout = self._layout()
        if layout == self._layout_saved:
            return
        os.makedirs(self.cfg.data_dir, exist_ok=True)
        tmp = self._layout_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps({"groups": {str(g): e for g, e in sorted(layout.items())}},
                                 option=orjson.OPT_INDENT_2))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._layout_path)
        _fsync_paths(self.cfg.data_dir)
        self._layout_saved = layout

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        self._publish_status()
        self._thread = threading.Thread(target=self._run, name="raft", daemon=True)
        self._thread.start()
        self._checkpoints = threading.Thread(target=self._checkpoint_loop, name="checkpoint",
                                             daemon=True)
        self._checkpoints.start()

    def _checkpoint_loop(self) -> None:
        """WAL checkpoints off the apply path, once a second per group."""
        while not self._stop.wait(1.0):
            for r in self.replicas.values():
                checkpoint = getattr(r.sm, "checkpoint", None)
                if checkpoint is None or r.failed is not None:
                    continue
                try:
                    with self._sm_lock:
                        if r.failed is None:
                            checkpoint()
                except Exception:
                    log.warning("checkpoint_failed", group=r.group_id, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self.mux.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if getattr(self, "_checkpoints", None) is not None:
            self._checkpoints.join(timeout=5)
        for r in self.replicas.values():
            try:
                r._doDestroy()
            except Exception:
                log.exception("replica_destroy_failed", group=r.group_id)
            r.sm.close()
        self.mux.close()
        self._sync_pool.shutdown(wait=False)

    def _run(self) -> None:
        hb = self.cfg.timing.heartbeat
        while not self._stop.is_set():
            self.mux.poll(min(0.01, hb / 2))
            while self._calls:
                self._calls.popleft()()
            for r in self.replicas.values():
                if r.failed is None:
                    self._tick(r)
            if self._outcomes:
                batch, self._outcomes = self._outcomes, []
                assert self._loop is not None
                self._loop.call_soon_threadsafe(_settle_all, batch)
            self.mux.flush(self._make_durable if self.cfg.durable else None)
            self.loop_iterations += 1
            now = time.monotonic()
            if now - self._status_at > 0.02:
                self._publish_status()
                for r in self.replicas.values():
                    r.maybe_compact()
                self._status_at = now
                try:
                    self._save_layout()
                except OSError:
                    log.exception("layout_save_failed")

    def _tick(self, r: GroupReplica) -> None:
        try:
            r.gate_election()
            r.doTick(0.0)
            # Group commit: what this tick applied becomes visible (to readers,
            # and to clients through the outcomes settled after the ticks)
            # before any reply or message leaves this iteration.
            r.flush_applied()
            r.visible_applied = r.raftLastApplied
            r.read_index_tick(self.cfg.timing.read_index_timeout)
            r.transfer_tick()
        except Exception as e:  # noqa: BLE001 - any failure fail-stops this replica alone
            # Fail-stop: a replica that cannot apply an entry deterministically
            # must not apply anything after it.
            r.fail_stop(e, "tick failed")

    def _make_durable(self) -> None:
        work = [w for r in self.replicas.values() for w in r.durability_work()]
        if not work:
            return
        self.fsyncs += len(work)
        if len(work) == 1:
            work[0]()
        else:
            # fsyncs release the GIL and the disk takes them concurrently: one
            # sync's latency for every group instead of one per group.
            list(self._sync_pool.map(lambda w: w(), work))

    def _publish_status(self) -> None:
        new = {gid: r.status() for gid, r in self.replicas.items()}
        for gid, st in new.items():
            old = self._status.get(gid)
            if old is None or (old["role"], old["leader"], old["term"]) != (
                    st["role"], st["leader"], st["term"]):
                log.info("group_state", group=gid, role=st["role"], leader=st["leader"],
                         term=st["term"], commit_index=st["commit_index"],
                         applied_index=st["raft_applied_index"])
        self._status = new

    # -- asyncio side -----------------------------------------------------

    def status(self) -> dict[int, dict[str, Any]]:
        return self._status

    def lease_valid(self, group_id: int) -> bool:
        """May this node's replica of ``group_id`` serve a lease read now: the
        published lease still runs and the replica still holds it (live)."""
        st = self._status.get(group_id)
        r = self.replicas.get(group_id)
        return (st is not None and r is not None and st["role"] == "leader"
                and time.monotonic() < st["lease_until"] and r.lease_holds(st["term"]))

    def propose(self, group_id: int, payload: bytes) -> asyncio.Future[dict[str, Any]]:
        """Submit ``payload`` to the group's log via the local replica.

        pysyncobj forwards it to the leader when this replica follows. The
        future resolves with the state machine's result on this replica, or
        fails with :class:`ProposalFailed`. It may also never resolve: callers
        must wait with a deadline.
        """
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        r = self.replicas.get(group_id)
        if r is None:
            fut.set_exception(ProposalFailed("not_hosted", definite=True))
            return fut
        if r.failed is not None:
            fut.set_exception(ProposalFailed("replica_failed", definite=True))
            return fut
        if r.transferring():
            # Nothing was proposed: the caller retries (by then the group has
            # a new leader, or the transfer gave up).
            fut.set_exception(ProposalFailed("transferring_leadership", definite=True))
            return fut

        def settle(res: Any, err: int) -> None:
            if fut.done():
                return
            if err == FAIL_REASON.SUCCESS:
                fut.set_result(res)
            elif err in Outcome.DEFINITE:
                fut.set_exception(ProposalFailed(Outcome.DEFINITE[err], definite=True))
            else:
                fut.set_exception(
                    ProposalFailed(Outcome.INDEFINITE.get(err, f"fail_{err}"), definite=False)
                )

        def callback(res: Any, err: int) -> None:  # raft thread
            self._outcomes.append((settle, res, err))

        r._apply(payload, callback=callback)
        self.mux.wake()
        return fut

    def read_index(self, group_id: int) -> asyncio.Future[int]:
        """An index at which the local replica may serve a linearizable read, once
        it has applied it (see ``GroupReplica.read_index``). Fails with a definite
        :class:`ProposalFailed` when it cannot be had; nothing was written."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[int] = loop.create_future()
        r = self.replicas.get(group_id)
        if r is None:
            fut.set_exception(ProposalFailed("not_hosted", definite=True))
            return fut
        if r.failed is not None:
            fut.set_exception(ProposalFailed("replica_failed", definite=True))
            return fut

        def settle(index: Any, err: Any) -> None:
            if fut.done():
                return
            if err is None:
                fut.set_result(index)
            else:
                fut.set_exception(ProposalFailed(str(err), definite=True))

        def callback(index: int | None, err: str | None) -> None:  # raft thread
            self._outcomes.append((settle, index, err))

        self.call_soon(lambda: r.read_index(callback))
        return fut

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the raft thread (everything pysyncobj touches lives there)."""
        self._calls.append(fn)
        self.mux.wake()

    def run(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``fn`` on the raft thread; its return value (or exception) settles the future."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

        def call() -> None:
            try:
                res = (True, fn())
            except Exception as e:  # noqa: BLE001 - handed to the awaiting caller
                res = (False, e)
            loop.call_soon_threadsafe(settle, *res)

        self.call_soon(call)
        return fut

    # -- placement: peers and replicas at runtime ---------------------------

    def add_peer(self, node_id: str, addr: tuple[str, int]) -> asyncio.Future[Any]:
        return self.run(lambda: self.mux.add_peer(node_id, addr))

    def remove_peer(self, node_id: str) -> asyncio.Future[Any]:
        return self.run(lambda: self.mux.remove_peer(node_id))

    def create_replica(self, gid: int, voters: list[str], learner: bool = True) -> asyncio.Future[Any]:
        """Host a replica of ``gid``: a learner that catches up from ``voters``
        (a fresh replica: any earlier files of the group here are set aside)."""
        def create() -> bool:
            if gid in self.replicas:
                return False
            path = self._replica_dir(gid)
            if os.path.exists(path):
                os.replace(path, f"{path}.old-{time.time_ns()}")
            r = self._open_replica(gid, voters, learner, ())
            self.mux.announce_connected(r._SyncObj__transport)
            self._save_layout()
            log.info("replica_created", group=gid, voters=voters, learner=learner)
            return True
        return self.run(create)

    def drop_replica(self, gid: int) -> asyncio.Future[Any]:
        """Stop hosting ``gid``: the replica stops and its files are deleted."""
        def drop() -> bool:
            r = self.replicas.get(gid)
            if r is None:
                return False
            self.replicas = {g: x for g, x in self.replicas.items() if g != gid}
            self.mux.unregister(gid)
            with self._sm_lock:  # not while the checkpoint thread uses it
                r.failed = "dropped"
                try:
                    r._doDestroy()
                finally:
                    r.sm.close()
            self._save_layout()
            path = self._replica_dir(gid)
            gone = f"{path}.dropped-{time.time_ns()}"
            os.replace(path, gone)
            threading.Thread(target=shutil.rmtree, args=(gone, True), daemon=True).start()
            log.info("replica_dropped", group=gid)
            return True
        return self.run(drop)

    def add_learner(self, gid: int, node_id: str) -> asyncio.Future[Any]:
        def add() -> bool:
            r = self.replicas.get(gid)
            if r is None:
                return False
            r.add_learner(node_id)
            self._save_layout()
            return True
        return self.run(add)

    def transfer_leadership(self, gid: int, target: str) -> asyncio.Future[Any]:
        def transfer() -> str | None:
            r = self.replicas.get(gid)
            return "not_hosted" if r is None else r.transfer_leadership(target)
        return self.run(transfer)

    def change_membership(self, gid: int, action: str, node_id: str) -> asyncio.Future[Any]:
        """Append the entry adding (``"add"``) or removing (``"rem"``) a voter, through
        the local replica, which must lead. Settles when it commits; fails with
        :class:`ProposalFailed` like a proposal (``denied``: another change is in
        flight, or the change is a no-op)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[Any] = loop.create_future()

        def settle(res: Any, err: Any) -> None:
            if fut.done():
                return
            if err == FAIL_REASON.SUCCESS:
                fut.set_result(True)
            elif err in Outcome.DEFINITE:
                fut.set_exception(ProposalFailed(Outcome.DEFINITE[err], definite=True))
            else:
                fut.set_exception(ProposalFailed(Outcome.INDEFINITE.get(err, f"fail_{err}"),
                                                 definite=False))

        def start() -> None:
            r = self.replicas.get(gid)
            if r is None or not r._isLeader():
                self._outcomes.append((settle, None, FAIL_REASON.NOT_LEADER))
                return
            r.change_membership(action, node_id,
                                lambda res, err: self._outcomes.append((settle, res, err)))

        self.call_soon(start)
        return fut

    def isolate(self, peers: list[str], silent: bool = False) -> None:
        """Fault injection: behave as if the links to ``peers`` were cut, until :meth:`heal`."""
        def cut() -> None:
            for p in peers:
                self.mux.isolate(p, silent)
        self.call_soon(cut)

    def heal(self) -> None:
        self.call_soon(self.mux.heal)


def _nothing() -> None:
    pass


def _settle_all(batch: list[tuple[Callable[[Any, Any], None], Any, Any]]) -> None:
    for settle, res, err in batch:
        settle(res, err)


def _fsync_paths(*paths: str) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
