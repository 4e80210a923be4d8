"""The ``raftmem`` command: ``up`` (a local cluster), ``node`` (one process), ``status``.

The CLI is the outermost layer: it may import the API package to run a node.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import click
import orjson

from raftmem.config import (
    ClusterSpec,
    NodeOptions,
    NodeSpec,
    ensure_secret,
    load_secret,
    parse_addr,
    secret_path,
)


@click.group()
@click.version_option(package_name="raftmem")
def main() -> None:
    """raftmem: a Raft-replicated, strongly consistent memory store for AI agents."""


@main.command()
@click.option("--cluster", "cluster_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="cluster.json describing every node.")
@click.option("--id", "node_id", required=True, help="This node's id in cluster.json.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where this node keeps its data [default: <cluster dir>/<id>].")
@click.option("--no-fsync", is_flag=True,
              help="Do not fsync the Raft log before acknowledging (survives kill -9, not power loss).")
@click.option("--json-logs", is_flag=True, help="Log JSON lines instead of console text.")
@click.option("--admin-token", envvar="RAFTMEM_ADMIN_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on /admin routes.")
@click.option("--max-body-bytes", type=int, default=8 * 1024 * 1024, show_default=True)
@click.option("--write-timeout", type=float, default=5.0, show_default=True,
              help="Seconds a write may take before it answers 504 (indefinite).")
@click.option("--unsafe-local-reads", is_flag=True, hidden=True,
              help="TEST ONLY: skip read barriers (breaks linearizability on purpose).")
@click.option("--unsafe-session-ignore-token", is_flag=True, hidden=True,
              help="TEST ONLY: serve session reads without waiting for the token's index.")
@click.option("--unsafe-lease-without-stickiness", is_flag=True, hidden=True,
              help="TEST ONLY: lease reads while followers vote without pre-vote or stickiness.")
def node(cluster_file: str, node_id: str, data_dir: str | None, no_fsync: bool, json_logs: bool,
         admin_token: str | None, max_body_bytes: int, write_timeout: float,
         unsafe_local_reads: bool, unsafe_session_ignore_token: bool,
         unsafe_lease_without_stickiness: bool) -> None:
    """Run one node process (raft groups + HTTP API) until SIGTERM."""
    from api.server import run_node

    spec = ClusterSpec.load(cluster_file)
    try:
        spec.node(node_id)
    except KeyError as e:
        raise click.BadParameter(str(e), param_hint="--id") from None
    try:
        secret = load_secret(cluster_file)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    data_dir = data_dir or os.path.join(os.path.dirname(os.path.abspath(cluster_file)), node_id)
    opts = NodeOptions(
        durable=not no_fsync, json_logs=json_logs, admin_token=admin_token,
        max_body_bytes=max_body_bytes, write_timeout_s=write_timeout,
        unsafe_local_reads=unsafe_local_reads,
        unsafe_session_ignore_token=unsafe_session_ignore_token,
        unsafe_lease_without_stickiness=unsafe_lease_without_stickiness,
    )
    run_node(spec, node_id, data_dir, secret, opts)


def _port_free(addr: str) -> bool:
    host, port = parse_addr(addr)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _get_json(url: str, timeout: float = 1.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return e.code, orjson.loads(e.read())
        except orjson.JSONDecodeError:
            return e.code, None
    except (OSError, orjson.JSONDecodeError):
        return 0, None


def local_spec(nodes: int, groups: int, host: str, api_port: int, raft_port: int) -> ClusterSpec:
    return ClusterSpec(
        nodes=tuple(
            NodeSpec(f"n{i + 1}", f"{host}:{api_port + i}", f"{host}:{raft_port + i}")
            for i in range(nodes)
        ),
        groups=groups,
        # Every node hosts a replica of every group until the placement driver
        # can route requests to replicas elsewhere (docs/placement.md).
        replicas=nodes,
        cluster_id=f"c-{os.urandom(4).hex()}",
    )


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default="./raftmem-data",
              show_default=True, help="Folder for all nodes' data; reused on restart.")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True,
              help="Nodes of a new cluster; each hosts a replica of every group.")
@click.option("--groups", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Shard groups (only for a new cluster).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--api-port", type=int, default=7001, show_default=True, help="First node's API port.")
@click.option("--raft-port", type=int, default=7101, show_default=True, help="First node's Raft port.")
@click.option("--no-fsync", is_flag=True, help="Pass --no-fsync to every node.")
@click.option("--ready-timeout", type=float, default=60.0, show_default=True)
def up(data_dir: str, nodes: int, groups: int, host: str, api_port: int, raft_port: int,
       no_fsync: bool, ready_timeout: float) -> None:
    """Start a local cluster on this machine and keep it running until Ctrl-C."""
    from tqdm import tqdm

    data_dir = os.path.abspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    cluster_file = os.path.join(data_dir, "cluster.json")
    if os.path.exists(cluster_file):
        spec = ClusterSpec.load(cluster_file)
        click.echo(f"Reusing cluster {spec.cluster_id} in {data_dir} ({len(spec.nodes)} nodes)")
    else:
        spec = local_spec(nodes, groups, host, api_port, raft_port)
        spec.save(cluster_file)
        click.echo(f"Created cluster {spec.cluster_id} in {data_dir}")
    ensure_secret(secret_path(cluster_file))

    busy = [a for n in spec.nodes for a in (n.api, n.raft) if not _port_free(a)]
    if busy:
        raise click.ClickException(
            f"address(es) already in use: {', '.join(busy)} — is another cluster running? "
            "Stop it, or start a new cluster with other --api-port/--raft-port and --data-dir."
        )

    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop_all(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)

    for n in spec.nodes:
        ndir = os.path.join(data_dir, n.id)
        os.makedirs(ndir, exist_ok=True)
        logf = open(os.path.join(ndir, "node.log"), "ab")  # noqa: SIM115 - owned by the child
        cmd = [sys.executable, "-m", "raftmem", "node", "--cluster", cluster_file, "--id", n.id,
               "--data-dir", ndir, "--json-logs"]
        if no_fsync:
            cmd.append("--no-fsync")
        procs[n.id] = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                       start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout
        pending = {n.id for n in spec.nodes}
        with tqdm(total=len(pending), desc="waiting for nodes to be ready", unit="node",
                  file=sys.stderr) as bar:
            while pending and not stopping:
                for n in spec.nodes:
                    if n.id in pending:
                        if procs[n.id].poll() is not None:
                            raise click.ClickException(
                                f"node {n.id} exited with {procs[n.id].returncode}; "
                                f"see {os.path.join(data_dir, n.id, 'node.log')}")
                        status, _ = _get_json(f"http://{n.api}/readyz")
                        if status == 200:
                            pending.discard(n.id)
                            bar.update(1)
                if pending and time.monotonic() > deadline:
                    raise click.ClickException(
                        f"nodes {sorted(pending)} not ready after {ready_timeout}s; see their node.log")
                time.sleep(0.1)  # poll interval of a readiness loop that has its own deadline
        if stopping:
            return
        click.echo("raftmem is up. API endpoints:")
        for n in spec.nodes:
            click.echo(f"  {n.id}: http://{n.api}")
        click.echo(f"Cluster description: {cluster_file}")
        click.echo("Press Ctrl-C to stop.")
        while not stopping:
            for nid, p in procs.items():
                if p.poll() is not None and not getattr(p, "_reported", False):
                    click.echo(f"warning: node {nid} exited with {p.returncode}", err=True)
                    p._reported = True  # type: ignore[attr-defined]
            time.sleep(0.2)
    finally:
        click.echo("Stopping nodes...", err=True)
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 15
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        click.echo("Stopped.", err=True)


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default="./raftmem-data",
              show_default=True)
def status(data_dir: str) -> None:
    """Show each node's readiness and its groups (leaders, terms, indexes)."""
    spec = ClusterSpec.load(os.path.join(data_dir, "cluster.json"))
    for n in spec.nodes:
        code, _ = _get_json(f"http://{n.api}/readyz")
        state = "ready" if code == 200 else ("down" if code == 0 else "not ready")
        click.echo(f"{n.id}  http://{n.api}  {state}")
        if code:
            _, cl = _get_json(f"http://{n.api}/admin/cluster")
            for gid, g in (cl or {}).get("groups", {}).items():
                click.echo(f"    group {gid}: {g['role']:<8} leader={g['leader']} term={g['term']} "
                           f"commit={g['commit_index']} applied={g['applied_index']}")


if __name__ == "__main__":
    main()
