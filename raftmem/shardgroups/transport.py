"""One Raft port per node: every shard group of the process multiplexed over it.

``Mux`` owns the listening socket and one outgoing connection per peer. It is
driven by the raft thread (``GroupHost``): ``poll()`` reads frames and hands
them to the group they name, ``flush()`` writes what the groups sent. Each
group replica sees a :class:`GroupTransport`, the pysyncobj ``Transport`` it
was built with; ``send`` only appends to the peer's buffer.

Contracts:

* Peers authenticate both ways with an HMAC over fresh nonces and a shared
  cluster secret before any Raft frame is accepted; frames are decoded by
  :mod:`raftmem.shardgroups.wire` (no pickle from the network).
* The listener binds only the configured address.
* A connection whose output has not drained for ``stall_timeout`` seconds is
  closed (a silent partition); groups are told the peer is disconnected and
  reconnection is retried every ``reconnect_interval``.
* ``flush(before_send)`` calls ``before_send()`` first: that is where the group
  host makes journals durable, so nothing that acknowledges an entry or a
  vote leaves the process before the entry or vote is on disk.
* Faults enter here: ``isolate(peer)`` behaves as a cut link (both directions)
  until ``heal()``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import structlog
from pysyncobj.node import Node
from pysyncobj.transport import Transport

from raftmem.shardgroups import wire

log = structlog.get_logger("raftmem.transport")

_HDR = struct.Struct(">IH")  # frame length (after this header), group id
MAX_FRAME = 64 * 1024 * 1024
HELLO = b"RMH1"
NONCE = 16
MAC = 32


class PeerNode(Node):
    """A pysyncobj node identified by our node id (``"n1"``); addresses live in the Mux."""

    def __init__(self, node_id: str, **kwargs: Any) -> None:
        super().__init__(node_id, **kwargs)


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"\x00".join(parts), hashlib.sha256).digest()


class _Conn:
    __slots__ = ("inbuf", "nonce", "out_since", "outbuf", "outgoing", "peer", "sock", "state")

    def __init__(self, sock: socket.socket, peer: str | None, outgoing: bool) -> None:
        self.sock = sock
        self.peer = peer
        self.outgoing = outgoing
        # outgoing: connecting -> await_hello -> await_ok -> ready
        # incoming: await_auth -> ready
        self.state = "connecting" if outgoing else "await_auth"
        self.inbuf = bytearray()
        self.outbuf: list[bytes] = []
        self.out_since = 0.0
        self.nonce = b""


class GroupTransport(Transport):
    """The pysyncobj-facing side of one group replica's traffic."""

    def __init__(self, mux: Mux, group_id: int, peers: list[PeerNode]) -> None:
        super().__init__(None, None, peers)
        self.mux = mux
        self.group_id = group_id
        self.peers = {p.id: p for p in peers}

    # Called with (node, message) before a message leaves; may add fields
    # (pysyncobj ignores keys it does not know). The replica's lease uses it.
    outgoing_hook: Any = None

    def send(self, node: Node, message: Any) -> bool:
        if self.outgoing_hook is not None:
            self.outgoing_hook(node, message)
        return self.mux.send(node.id, self.group_id, message)

    def deliver(self, peer_id: str, message: Any) -> None:
        node = self.peers.get(peer_id)
        if node is None:
            # A node outside this replica's configuration, as far as the replica
            # knows. A fresh learner replaying the log passes removals of earlier
            # incarnations of node ids, the current leader's among them, and must
            # still hear that leader's appends to learn of its re-addition
            # (jepsen_like track record #11). Nothing else from a stranger is
            # taken: pysyncobj keys its per-peer state by configured nodes.
            if not (isinstance(message, dict) and message.get("type") == "append_entries"):
                return
            node = PeerNode(peer_id)
        self._onMessageReceived(node, message)

    def peer_up(self, peer_id: str) -> None:
        node = self.peers.get(peer_id)
        if node is not None:
            self._onNodeConnected(node)

    def peer_down(self, peer_id: str) -> None:
        node = self.peers.get(peer_id)
        if node is not None:
            self._onNodeDisconnected(node)

    def addNode(self, node: Node) -> None:
        """A new member or learner (pysyncobj's membership changes call this too)."""
        if node.id in self.peers or node.id == self.mux.node_id:
            return
        self.peers[node.id] = node
        if self.mux.peer_ready(node.id):
            self._onNodeConnected(node)

    def dropNode(self, node: Node) -> None:
        self.peers.pop(node.id, None)


class Mux:
    def __init__(
        self,
        node_id: str,
        bind: tuple[str, int],
        peers: dict[str, tuple[str, int]],
        secret: bytes,
        *,
        stall_timeout: float = 2.0,
        reconnect_interval: float = 0.1,
    ) -> None:
        self.node_id = node_id
        self.bind = bind
        self.peer_addrs = {p: a for p, a in peers.items() if p != node_id}
        self.secret = secret
        self.stall_timeout = stall_timeout
        self.reconnect_interval = reconnect_interval
        self.groups: dict[int, GroupTransport] = {}
        self.sel = selectors.DefaultSelector()
        self.out: dict[str, _Conn] = {}
        self.conns: set[_Conn] = set()
        self.isolated: set[str] = set()
        self.silent: set[str] = set()
        self._next_connect: dict[str, float] = {}
        self.frames_in = 0
        self.frames_out = 0
        self.auth_failures = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(bind)
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.sel.register(self._listener, selectors.EVENT_READ, "listen")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")

    # -- group side -------------------------------------------------------

    def register(self, group_id: int, peers: list[str]) -> GroupTransport:
        t = GroupTransport(self, group_id, [PeerNode(p) for p in peers if p != self.node_id])
        self.groups[group_id] = t
        return t

    def unregister(self, group_id: int) -> None:
        self.groups.pop(group_id, None)

    def add_peer(self, peer: str, addr: tuple[str, int]) -> None:
        """Know (or re-address) a node: connect to it and accept its connections."""
        if peer == self.node_id or self.peer_addrs.get(peer) == addr:
            return
        self.peer_addrs[peer] = addr
        conn = self.out.get(peer)
        if conn is not None:
            self._close(conn, "peer re-addressed")
        self._next_connect.pop(peer, None)

    def remove_peer(self, peer: str) -> None:
        """Forget a node: close its connections and refuse new ones."""
        self.peer_addrs.pop(peer, None)
        for conn in list(self.conns):
            if conn.peer == peer:
                self._close(conn, "peer removed")

    def peer_ready(self, peer: str) -> bool:
        conn = self.out.get(peer)
        return conn is not None and conn.state == "ready" and peer not in self.isolated

    def announce_connected(self, t: GroupTransport) -> None:
        for peer, conn in self.out.items():
            if conn.state == "ready" and peer not in self.isolated:
                t.peer_up(peer)

    def send(self, peer: str, group_id: int, message: Any) -> bool:
        conn = self.out.get(peer)
        if conn is None or conn.state != "ready":
            return False
        if peer in self.isolated:
            return peer in self.silent  # a silent cut swallows what is sent
        payload = wire.encode(message)
        if not conn.outbuf:
            conn.out_since = time.monotonic()
        conn.outbuf.append(_HDR.pack(len(payload), group_id) + payload)
        self.frames_out += 1
        return True

    def wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # already woken: the pipe is full of wake-ups

    # -- faults -----------------------------------------------------------

    def isolate(self, peer: str, silent: bool = False) -> None:
        """Cut the link to ``peer`` both ways.

        ``silent`` drops frames while the connection still looks up (as an
        iptables DROP does); otherwise the groups are told the peer is gone
        (as after a reset connection).
        """
        if peer in self.isolated:
            return
        self.isolated.add(peer)
        if silent:
            self.silent.add(peer)
            return
        for t in self.groups.values():
            t.peer_down(peer)

    def heal(self) -> None:
        healed, self.isolated = self.isolated - self.silent, set()
        self.silent = set()
        for peer in healed:
            conn = self.out.get(peer)
            if conn is not None and conn.state == "ready":
                for t in self.groups.values():
                    t.peer_up(peer)

    # -- event loop -------------------------------------------------------

    def poll(self, timeout: float) -> None:
        now = time.monotonic()
        self._maintain(now)
        for key, mask in self.sel.select(timeout):
            tag = key.data
            if tag == "listen":
                self._accept()
            elif tag == "wake":
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
            else:
                conn: _Conn = tag
                if mask & selectors.EVENT_WRITE:
                    self._on_writable(conn)
                if mask & selectors.EVENT_READ and conn in self.conns:
                    self._on_readable(conn)

    def flush(self, before_send: Callable[[], None] | None = None) -> None:
        pending = [c for c in self.out.values() if c.outbuf and c.state == "ready"]
        if not pending:
            return
        if before_send is not None:
            before_send()
        for conn in pending:
            self._write(conn)

    def close(self) -> None:
        for conn in list(self.conns):
            self._close(conn, "shutdown")
        for s in (self._listener, self._wake_r, self._wake_w):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.sel.close()

    # -- internals --------------------------------------------------------

    def _maintain(self, now: float) -> None:
        for peer, addr in self.peer_addrs.items():
            conn = self.out.get(peer)
            if conn is None:
                if now >= self._next_connect.get(peer, 0.0):
                    self._next_connect[peer] = now + self.reconnect_interval
                    self._connect(peer, addr)
            elif conn.outbuf and now - conn.out_since > self.stall_timeout:
                self._close(conn, "stalled")
            elif conn.state != "ready" and now - conn.out_since > self.stall_timeout:
                self._close(conn, "handshake timeout")

    def _connect(self, peer: str, addr: tuple[str, int]) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Originate from our own address so that per-address faults (iptables
        # rules on 127.0.0.x pairs) see the real source node.
        try:
            s.bind((self.bind[0], 0))
        except OSError:
            pass
        conn = _Conn(s, peer, outgoing=True)
        conn.out_since = time.monotonic()
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return
        self.out[peer] = conn
        self.conns.add(conn)
        self.sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _accept(self) -> None:
        while True:
            try:
                s, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(s, None, outgoing=False)
            conn.nonce = os.urandom(NONCE)
            conn.out_since = time.monotonic()
            self.conns.add(conn)
            self.sel.register(s, selectors.EVENT_READ, conn)
            self._raw_send(conn, HELLO + conn.nonce)

    def _raw_send(self, conn: _Conn, data: bytes) -> None:
        if not conn.outbuf:
            conn.out_since = time.monotonic()
        conn.outbuf.append(data)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        data = b"".join(conn.outbuf)
        conn.outbuf.clear()
        try:
            sent = conn.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as e:
            self._close(conn, f"send failed: {e}")
            return
        if sent < len(data):
            conn.outbuf.append(data[sent:])
            if sent:
                conn.out_since = time.monotonic()
            self._want_write(conn, True)
        else:
            self._want_write(conn, False)

    def _want_write(self, conn: _Conn, on: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        try:
            self.sel.modify(conn.sock, events, conn)
        except (KeyError, ValueError):
            pass

    def _on_writable(self, conn: _Conn) -> None:
        if conn.state == "connecting":
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._close(conn, f"connect failed: {os.strerror(err)}")
                return
            conn.state = "await_hello"
            self._want_write(conn, bool(conn.outbuf))
            return
        if conn.outbuf:
            self._write(conn)
        else:
            self._want_write(conn, False)

    def _on_readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._close(conn, f"recv failed: {e}")
            return
        if not data:
            self._close(conn, "closed by peer")
            return
        conn.inbuf += data
        if conn.state != "ready" and not self._handshake(conn):
            return
        if conn.state == "ready" and not conn.outgoing:
            self._read_frames(conn)

    def _handshake(self, conn: _Conn) -> bool:
        buf = conn.inbuf
        if conn.state == "await_hello":  # outgoing: server sent HELLO + nonce
            if len(buf) < len(HELLO) + NONCE:
                return False
            if bytes(buf[:4]) != HELLO:
                self._close(conn, "bad hello")
                return False
            server_nonce = bytes(buf[4 : 4 + NONCE])
            del buf[: 4 + NONCE]
            conn.nonce = os.urandom(NONCE)
            me = self.node_id.encode()
            assert conn.peer is not None
            proof = _mac(self.secret, b"client", server_nonce, me, conn.peer.encode())
            self._raw_send(conn, bytes([len(me)]) + me + conn.nonce + proof)
            conn.state = "await_ok"
            return False
        if conn.state == "await_ok":
            if len(buf) < MAC:
                return False
            assert conn.peer is not None
            expect = _mac(self.secret, b"server", conn.nonce, conn.peer.encode())
            if not hmac.compare_digest(bytes(buf[:MAC]), expect):
                self.auth_failures += 1
                self._close(conn, "peer failed authentication")
                return False
            del buf[:MAC]
            conn.state = "ready"
            log.info("peer_connected", peer=conn.peer)
            if conn.peer not in self.isolated:
                for t in self.groups.values():
                    t.peer_up(conn.peer)
            return False
        if conn.state == "await_auth":  # incoming: client proves itself
            if len(buf) < 1:
                return False
            n = buf[0]
            if len(buf) < 1 + n + NONCE + MAC:
                return False
            peer = bytes(buf[1 : 1 + n]).decode("utf-8", "replace")
            client_nonce = bytes(buf[1 + n : 1 + n + NONCE])
            proof = bytes(buf[1 + n + NONCE : 1 + n + NONCE + MAC])
            del buf[: 1 + n + NONCE + MAC]
            expect = _mac(self.secret, b"client", conn.nonce, peer.encode(), self.node_id.encode())
            if peer not in self.peer_addrs or not hmac.compare_digest(proof, expect):
                self.auth_failures += 1
                log.warning("peer_auth_rejected", claimed=peer)
                self._close(conn, "authentication failed")
                return False
            conn.peer = peer
            conn.state = "ready"
            self._raw_send(conn, _mac(self.secret, b"server", client_nonce, self.node_id.encode()))
            return True
        return conn.state == "ready"

    def _read_frames(self, conn: _Conn) -> None:
        buf = conn.inbuf
        pos = 0
        peer = conn.peer
        assert peer is not None
        dropped = peer in self.isolated
        while len(buf) - pos >= _HDR.size:
            length, group_id = _HDR.unpack_from(buf, pos)
            if length > MAX_FRAME:
                self._close(conn, "oversized frame")
                return
            end = pos + _HDR.size + length
            if len(buf) < end:
                break
            payload = bytes(buf[pos + _HDR.size : end])
            pos = end
            if dropped:
                continue
            try:
                message = wire.decode(payload)
            except wire.WireError as e:
                self._close(conn, f"undecodable frame: {e}")
                return
            t = self.groups.get(group_id)
            if t is not None:
                self.frames_in += 1
                t.deliver(peer, message)
        del buf[:pos]

    def _close(self, conn: _Conn, why: str) -> None:
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        if conn.outgoing and conn.peer is not None and self.out.get(conn.peer) is conn:
            del self.out[conn.peer]
            was_ready = conn.state == "ready"
            if was_ready:
                log.info("peer_disconnected", peer=conn.peer, reason=why)
                for t in self.groups.values():
                    t.peer_down(conn.peer)
