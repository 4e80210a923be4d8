"""Real node processes on loopback for cluster and API tests.

Every wait is a deadline poll that asserts inside itself; nothing sleeps to
synchronise.
"""

from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from raftmem.config import ClusterSpec, NodeSpec, ensure_secret, secret_path

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    base = free_port_block(n, host)
    return list(range(base, base + n))


def free_port_block(n: int, host: str = "127.0.0.1", lo: int = 20000, hi: int = 32000) -> int:
    """First of ``n`` consecutive ports on ``host`` that are free now.

    The block is taken below the kernel's ephemeral range (32768+ here), so that
    outgoing connections made by anything on this machine cannot take one of
    its ports between this check and the moment a node binds it.
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(lo, hi - n)
        socks = []
        try:
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {n} free ports on {host} in [{lo}, {hi})")


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``pred`` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - remembered for the failure message
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error: {last_exc!r}")
        time.sleep(interval)


class Response:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body[:200]!r}>"


class Client:
    """A small keep-alive HTTP client for one node (one connection; not thread-safe)."""

    def __init__(self, addr: str, timeout: float = 10.0) -> None:
        self.host, port = addr.rsplit(":", 1)
        self.port = int(port)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data, headers=h)
                r = self._conn.getresponse()
                payload = r.read()
                return Response(r.status, payload, {k.lower(): v for k, v in r.getheaders()})
            except (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError):
                self.close()
                if attempt == 1 or method not in ("GET",):
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Response:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)


class LocalCluster:
    def __init__(self, data_dir: str, nodes: int = 3, groups: int = 4, host: str = "127.0.0.1",
                 extra_args: list[str] | None = None) -> None:
        self.data_dir = data_dir
        os.makedirs(data_dir, exist_ok=True)
        ports = free_ports(2 * nodes, host)
        self.spec = ClusterSpec(
            nodes=tuple(NodeSpec(f"n{i + 1}", f"{host}:{ports[2 * i]}", f"{host}:{ports[2 * i + 1]}")
                        for i in range(nodes)),
            groups=groups, replicas=min(3, nodes), cluster_id="test",
        )
        self.cluster_file = os.path.join(data_dir, "cluster.json")
        self.spec.save(self.cluster_file)
        ensure_secret(secret_path(self.cluster_file))
        self.extra_args = extra_args or []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def node_ids(self) -> list[str]:
        return [n.id for n in self.spec.nodes]

    def api(self, node_id: str) -> str:
        return self.spec.node(node_id).api

    def client(self, node_id: str | None = None, timeout: float = 10.0) -> Client:
        return Client(self.api(node_id or self.node_ids[0]), timeout=timeout)

    def start(self, node_id: str | None = None) -> None:
        for nid in [node_id] if node_id else self.node_ids:
            ndir = os.path.join(self.data_dir, nid)
            os.makedirs(ndir, exist_ok=True)
            log = open(os.path.join(ndir, "node.log"), "ab")  # noqa: SIM115 - owned by the child
            env = dict(os.environ, PYTHONPATH=ROOT)
            self.procs[nid] = subprocess.Popen(
                [sys.executable, "-m", "raftmem", "node", "--cluster", self.cluster_file, "--id", nid,
                 "--data-dir", ndir, "--json-logs", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            )

    def is_ready(self, node_id: str) -> bool:
        try:
            c = Client(self.api(node_id), timeout=1.0)
            try:
                return c.get("/readyz").status == 200
            finally:
                c.close()
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30.0, nodes: list[str] | None = None) -> None:
        for nid in nodes or list(self.procs):
            try:
                wait_for(lambda nid=nid: self._alive_or_fail(nid) and self.is_ready(nid), timeout,
                         f"node {nid} ready")
            except AssertionError as e:
                raise AssertionError(f"{e}\nreadiness: {self.readiness(nid)}") from None

    def readiness(self, node_id: str) -> Any:
        try:
            c = Client(self.api(node_id), timeout=2.0)
            try:
                return {"readyz": c.get("/readyz").json(),
                        "groups": c.get("/admin/cluster").json().get("groups")}
            finally:
                c.close()
        except OSError as e:
            return repr(e)

    def _alive_or_fail(self, nid: str) -> bool:
        p = self.procs[nid]
        if p.poll() is not None:
            raise AssertionError(f"node {nid} exited with {p.returncode}:\n{self.log_tail(nid)}")
        return True

    def log_tail(self, nid: str, n: int = 4000) -> str:
        try:
            with open(os.path.join(self.data_dir, nid, "node.log"), "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[node_id]
        p.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            p.wait(timeout=20)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def cluster_state(self, node_id: str) -> dict[str, Any]:
        c = Client(self.api(node_id), timeout=2.0)
        try:
            return c.get("/admin/cluster").json()
        finally:
            c.close()

    def leader_of(self, group: int) -> str | None:
        for nid, p in self.procs.items():
            if p.poll() is not None:
                continue
            try:
                st = self.cluster_state(nid)["groups"][str(group)]
            except (OSError, KeyError, TypeError):
                continue
            if st["role"] == "leader":
                return nid
        return None


@contextmanager
def running_cluster(data_dir: str, namespace: tuple[str, int, str] | None = None,
                    **kwargs: Any) -> Iterator[LocalCluster]:
    """A started, ready cluster (optionally with a namespace ``(name, dim, metric)``), stopped after."""
    c = LocalCluster(data_dir, **kwargs)
    c.start()
    try:
        c.wait_ready(timeout=60)
        if namespace is not None:
            name, dim, metric = namespace
            r = c.client("n1").put(f"/v1/namespaces/{name}", {"dim": dim, "metric": metric})
            assert r.status == 201, r
        yield c
    finally:
        c.stop()
