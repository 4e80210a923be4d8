"""`raftmem up`: the first five minutes of a user — start, store, stop, start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import orjson

from tests.cluster.harness import ROOT, Client, free_port_block, wait_for

# An address of its own, so that no other test's cluster or client connection
# can hold one of the six ports `raftmem up` derives from its two first ports.
HOST = "127.0.0.81"


class Up:
    """``raftmem up`` as a child process, its output collected as it comes."""

    def __init__(self, data_dir: str, api_port: int, raft_port: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raftmem", "up", "--data-dir", data_dir, "--host", HOST,
             "--api-port", str(api_port), "--raft-port", str(raft_port)],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.output = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            self.output += chunk.decode(errors="replace")

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        assert self.proc.returncode == 0, self.output
        return self.output


def ready(data_dir: str) -> list[str]:
    with open(os.path.join(data_dir, "cluster.json"), "rb") as f:
        nodes = orjson.loads(f.read())["nodes"]
    return [n["api"] for n in nodes if Client(n["api"], timeout=1).get("/readyz").status == 200]


def test_up_serves_stops_cleanly_and_restarts_with_the_same_data(tmp_path) -> None:
    data_dir = str(tmp_path / "data")
    base = free_port_block(6, HOST)
    api_port, raft_port = base, base + 3
    up = Up(data_dir, api_port, raft_port)
    try:
        wait_for(lambda: "raftmem is up" in up.output, 60, "raftmem up to report the cluster up")
        assert len(ready(data_dir)) == 3
        c = Client(f"{HOST}:{api_port}")
        assert c.put("/v1/namespaces/notes", {"dim": 3, "metric": "cosine"}).status == 201
        r = c.post("/v1/namespaces/notes/memories",
                   {"id": "first", "agent_id": "me", "text": "hello", "embedding": [1, 0, 0]})
        assert r.status == 201, r
    finally:
        out = up.stop()
    assert "Stopped." in out
    with open(os.path.join(data_dir, "cluster.json"), "rb") as f:
        assert len(orjson.loads(f.read())["nodes"]) == 3

    up = Up(data_dir, api_port, raft_port)
    try:
        wait_for(lambda: "raftmem is up" in up.output, 60, "the cluster back up")
        r = Client(f"{HOST}:{api_port + 2}").get("/v1/namespaces/notes/memories/first")
        assert r.status == 200 and r.json()["text"] == "hello"
    finally:
        out = up.stop()
    assert "Reusing cluster" in out
