"""Start and stop the systems under test: raftmem (``raftmem up``), etcd, the constant server.

Every process here is started by us and stopped by its own PID (SIGTERM, a
grace period, then SIGKILL); nothing else on the machine is touched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import orjson

from bench import procfs

REPO = Path(__file__).resolve().parents[1]
ETCD_INSTALL = "apt-get update && apt-get install -y etcd-server etcd-client"


def http_json(url: str, body: dict[str, Any] | None = None, method: str | None = None,
              timeout: float = 10.0) -> tuple[int, Any]:
    """One blocking JSON request; (status, decoded body) — status 0 if unreachable."""
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, orjson.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, orjson.loads(raw)
        except orjson.JSONDecodeError:
            return e.code, raw.decode(errors="replace")
    except (OSError, orjson.JSONDecodeError):
        return 0, None


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def wait_until(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes] | None = None,
               log: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}"
                               + (f"; see {log}" if log else ""))
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout}s" + (f"; see {log}" if log else ""))
        time.sleep(0.2)  # poll interval of a loop that has its own deadline


def stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM a process we started, wait, SIGKILL it if it outlives the grace period."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class RaftmemCluster:
    """A fresh local cluster via ``raftmem up`` (default durability: fsync on).

    Every node must host a replica of every group today (raftmem/node.py refuses
    to start otherwise, until the placement driver routes to remote replicas), so
    a cluster of more than 3 nodes is created with as many replicas per group as
    nodes: ``raftmem up --nodes 5`` alone (3 replicas per group) does not start.
    The cluster description is then written here and ``raftmem up`` reuses it.
    """

    def __init__(self, data_dir: str, nodes: int = 3, host: str = "127.0.0.61",
                 api_port: int = 27001, raft_port: int = 27101, groups: int | None = None,
                 code_dir: str | None = None) -> None:
        """``code_dir``: run the nodes from this checkout (``python -m raftmem`` in it)
        instead of the installed code (``python -m bench ab`` compares commits)."""
        self.data_dir = data_dir
        self.code_dir = code_dir
        self.nodes = nodes
        self.replicas = nodes if nodes > 3 else min(3, nodes)
        self.host = host
        self.api_port = api_port
        self.raft_port = raft_port
        self.groups = groups
        self.proc: subprocess.Popen[bytes] | None = None
        self.node_pids: dict[str, int] = {}
        self.urls: list[str] = []
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> str:
        return os.path.join(self.data_dir, "up.log")

    def start(self, timeout: float = 180.0) -> None:
        if os.path.exists(os.path.join(self.data_dir, "cluster.json")):
            raise RuntimeError(f"{self.data_dir} already holds a cluster; the suite wants a fresh one")
        busy = [f"{self.host}:{p}" for base in (self.api_port, self.raft_port)
                for p in range(base, base + self.nodes) if not port_free(self.host, p)]
        if busy:
            raise RuntimeError(f"address(es) in use: {', '.join(busy)}; pick other ports "
                               "(--api-port/--raft-port) or stop what uses them")
        os.makedirs(self.data_dir, exist_ok=True)
        if self.replicas != min(3, self.nodes):
            from raftmem.cli import local_spec

            spec0 = local_spec(self.nodes, self.groups or 4, self.host, self.api_port,
                               self.raft_port)
            dataclasses.replace(spec0, replicas=self.replicas).save(
                os.path.join(self.data_dir, "cluster.json"))
        cmd = [sys.executable, "-m", "raftmem", "up", "--data-dir", self.data_dir,
               "--nodes", str(self.nodes), "--host", self.host, "--api-port", str(self.api_port),
               "--raft-port", str(self.raft_port), "--ready-timeout", str(timeout)]
        if self.groups:
            cmd += ["--groups", str(self.groups)]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = None
        if self.code_dir is not None:
            env = {**os.environ, "PYTHONPATH": self.code_dir}
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=self.code_dir, env=env)
        cluster_file = os.path.join(self.data_dir, "cluster.json")
        wait_until("raftmem cluster.json", lambda: os.path.exists(cluster_file), 30, self.proc,
                   self.log_path)
        time.sleep(0.2)  # let `raftmem up` finish writing the file it just created
        with open(cluster_file, "rb") as f:
            spec = orjson.loads(f.read())
        self.urls = [f"http://{n['api']}" for n in spec["nodes"]]
        ids = [n["id"] for n in spec["nodes"]]

        def ready() -> bool:
            return all(http_json(u + "/readyz", timeout=2)[0] == 200 for u in self.urls)

        wait_until("raftmem nodes ready", ready, timeout, self.proc, self.log_path)
        for pid in procfs.children(self.proc.pid):
            args = procfs.cmdline(pid)
            if "--id" in args:
                nid = args[args.index("--id") + 1]
                if nid in ids:
                    self.node_pids[nid] = pid
        if sorted(self.node_pids) != sorted(ids):
            raise RuntimeError(f"found node processes {self.node_pids}, expected {ids}")

    def node_dirs(self) -> dict[str, str]:
        return {nid: os.path.join(self.data_dir, nid) for nid in self.node_pids}

    def disk_usage(self) -> dict[str, dict[str, int]]:
        """Per node: bytes of SQLite databases, Raft journals/snapshots, and in all."""
        out: dict[str, dict[str, int]] = {}
        for nid, d in self.node_dirs().items():
            db = raft = 0
            for root, _dirs, files in os.walk(d):
                for name in files:
                    try:
                        size = os.lstat(os.path.join(root, name)).st_blocks * 512
                    except OSError:
                        continue
                    if name.startswith("state.db"):
                        db += size
                    elif name.startswith("raft."):
                        raft += size
            out[nid] = {"sqlite": db, "raft": raft, "total": procfs.dir_size(d)}
        return out

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=40)
            for pid in self.node_pids.values():  # `up` stops them; make sure of it
                if any(self.data_dir in a for a in procfs.cmdline(pid)):  # still ours
                    _kill_pid(pid)
            self.proc = None
        if self._log:
            self._log.close()
            self._log = None


def etcd_binary() -> str | None:
    return shutil.which("etcd") or (os.path.exists("/usr/bin/etcd") and "/usr/bin/etcd") or None


def etcd_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10, check=False)
        return out.stdout.splitlines()[0] if out.stdout else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


class EtcdCluster:
    """Three etcd members on loopback, each with its own data folder, default durability."""

    def __init__(self, data_dir: str, hosts: list[str], client_port: int = 2379,
                 peer_port: int = 2380) -> None:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError(f"etcd is not installed. Install it with:\n  {ETCD_INSTALL}\n"
                               "or run raftmem only with --no-etcd")
        self.binary = binary
        self.version = etcd_version(binary)
        self.data_dir = data_dir
        self.hosts = hosts
        self.client_port = client_port
        self.peer_port = peer_port
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://{h}:{self.client_port}" for h in self.hosts]

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items()}

    def start(self, timeout: float = 60.0) -> None:
        busy = [f"{h}:{p}" for h in self.hosts for p in (self.client_port, self.peer_port)
                if not port_free(h, p)]
        if busy:
            raise RuntimeError(f"etcd address(es) in use: {', '.join(busy)}")
        names = [f"e{i + 1}" for i in range(len(self.hosts))]
        initial = ",".join(f"{n}=http://{h}:{self.peer_port}" for n, h in zip(names, self.hosts))
        token = f"bench-{os.getpid()}-{int(time.time())}"
        for name, host in zip(names, self.hosts):
            d = os.path.join(self.data_dir, name)
            os.makedirs(d, exist_ok=True)
            log = open(os.path.join(self.data_dir, f"{name}.log"), "ab")  # noqa: SIM115
            self._logs.append(log)
            cmd = [self.binary, "--name", name, "--data-dir", d,
                   "--listen-client-urls", f"http://{host}:{self.client_port}",
                   "--advertise-client-urls", f"http://{host}:{self.client_port}",
                   "--listen-peer-urls", f"http://{host}:{self.peer_port}",
                   "--initial-advertise-peer-urls", f"http://{host}:{self.peer_port}",
                   "--initial-cluster", initial, "--initial-cluster-state", "new",
                   "--initial-cluster-token", token, "--logger", "zap", "--log-level", "warn"]
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)

        def healthy() -> bool:
            for u in self.urls:
                status, body = http_json(u + "/health", timeout=2)
                if status != 200 or not isinstance(body, dict) or body.get("health") != "true":
                    return False
            return True

        deadline = time.monotonic() + timeout
        while not healthy():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"etcd member(s) {dead} exited; see {self.data_dir}/*.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"etcd not healthy after {timeout}s; see {self.data_dir}/*.log")
            time.sleep(0.2)  # poll interval of a loop that has its own deadline

    def disk_usage(self) -> dict[str, dict[str, int]]:
        return {n: {"total": procfs.dir_size(os.path.join(self.data_dir, n))} for n in self.procs}

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self._logs:
            log.close()
        self._logs = []


class ConstServer:
    """``bench.constserver`` in a process of its own."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        if not port_free(self.host, self.port):
            raise RuntimeError(f"{self.host}:{self.port} is in use")
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.constserver", self.host,
                                      str(self.port)], stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, env=env, cwd=str(REPO))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            stop_process(self.proc, 5)
            raise RuntimeError("the constant-answer server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 5)
            self.proc = None
