"""The multiplexed Raft transport: authentication, framing, fault seam (real sockets, no pysyncobj)."""

from __future__ import annotations

import pickle
import socket
import time
from typing import Any

from raftmem.shardgroups.transport import Mux
from tests.cluster.harness import free_ports


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []
        self.up: list[str] = []
        self.down: list[str] = []


def make_pair(secret_a: bytes = b"k", secret_b: bytes = b"k") -> tuple[Mux, Mux, Recorder, Recorder]:
    pa, pb = free_ports(2)
    peers = {"a": ("127.0.0.1", pa), "b": ("127.0.0.1", pb)}
    a = Mux("a", peers["a"], peers, secret_a)
    b = Mux("b", peers["b"], peers, secret_b)
    recs = []
    for m in (a, b):
        r = Recorder()
        t = m.register(7, ["a", "b"])
        t.setOnMessageReceivedCallback(lambda node, msg, r=r: r.got.append((node.id, msg)))
        t.setOnNodeConnectedCallback(lambda node, r=r: r.up.append(node.id))
        t.setOnNodeDisconnectedCallback(lambda node, r=r: r.down.append(node.id))
        recs.append(r)
    return a, b, recs[0], recs[1]


def pump(muxes: list[Mux], until: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached"
        for m in muxes:
            m.poll(0.005)
            m.flush()


def test_authenticated_peers_exchange_frames_per_group() -> None:
    a, b, ra, rb = make_pair()
    try:
        pump([a, b], lambda: "b" in ra.up and "a" in rb.up)
        assert a.send("b", 7, {"type": "request_vote", "term": 3})
        assert a.send("b", 99, {"type": "for a group b does not host"})
        pump([a, b], lambda: rb.got)
        assert rb.got == [("a", {"type": "request_vote", "term": 3})]
    finally:
        a.close()
        b.close()


def test_wrong_secret_never_connects() -> None:
    a, b, ra, rb = make_pair(b"right", b"wrong")
    try:
        pump([a, b], lambda: a.auth_failures + b.auth_failures >= 2)
        assert not ra.up and not rb.up
        assert not a.send("b", 7, {"type": "x"})
    finally:
        a.close()
        b.close()


def test_stranger_sending_a_pickle_is_dropped() -> None:
    a, b, ra, rb = make_pair()
    try:
        pump([a, b], lambda: "b" in ra.up)
        s = socket.create_connection(b.bind, timeout=2)
        s.sendall(b"\x01a" + b"\x00" * 48 + pickle.dumps(("os.system", "true")))
        pump([a, b], lambda: b.auth_failures >= 1)
        s.close()
        assert rb.got == []
        # The real peer is unaffected.
        assert a.send("b", 7, {"type": "ping"})
        pump([a, b], lambda: rb.got)
    finally:
        a.close()
        b.close()


def test_isolate_cuts_both_directions_until_heal() -> None:
    a, b, ra, rb = make_pair()
    try:
        pump([a, b], lambda: "b" in ra.up and "a" in rb.up)
        b.isolate("a")
        assert rb.down == ["a"]
        assert not b.send("a", 7, {"type": "x"})
        assert a.send("b", 7, {"type": "dropped"})
        pump([a, b], lambda: a.frames_out >= 1 and not a.out["b"].outbuf)
        for _ in range(20):
            b.poll(0.005)
        assert rb.got == []
        b.heal()
        assert rb.up.count("a") == 2
        assert a.send("b", 7, {"type": "after heal"})
        pump([a, b], lambda: rb.got)
        assert rb.got == [("a", {"type": "after heal"})]
    finally:
        a.close()
        b.close()
