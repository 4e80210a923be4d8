"""The ``raftmem`` command: ``up`` (a local cluster), ``node`` (one process), ``status``,
``admin`` (placement: cluster, ranges, rebalance --dry-run, operators).

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
@click.option("--read-barrier", type=click.Choice(["read-index", "log"]), default="read-index",
              show_default=True,
              help="How linearizable reads confirm leadership: a quorum of heartbeat acks "
                   "(read-index) or a no-op entry through the Raft log (log).")
@click.option("--unsafe-local-reads", is_flag=True, hidden=True,
              help="TEST ONLY: skip read barriers (breaks linearizability on purpose).")
@click.option("--unsafe-session-ignore-token", is_flag=True, hidden=True,
              help="TEST ONLY: serve session reads without waiting for the token's index.")
@click.option("--unsafe-lease-without-stickiness", is_flag=True, hidden=True,
              help="TEST ONLY: lease reads while followers vote without pre-vote or stickiness.")
def node(cluster_file: str, node_id: str, data_dir: str | None, no_fsync: bool, json_logs: bool,
         admin_token: str | None, max_body_bytes: int, write_timeout: float,
         read_barrier: str, unsafe_local_reads: bool, unsafe_session_ignore_token: bool,
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
        read_barrier=read_barrier, unsafe_local_reads=unsafe_local_reads,
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



# --- admin: talk to any node's admin API ----------------------------------------------


class AdminClient:
    """HTTP to one node's /admin routes, with the admin token from RAFTMEM_ADMIN_TOKEN."""

    def __init__(self, node: str, token: str | None, timeout: float) -> None:
        base = node if "://" in node else f"http://{node}"
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str) -> Any:
        """The parsed JSON answer; a ClickException with the server's error otherwise."""
        req = urllib.request.Request(self.base + path, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return orjson.loads(r.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                err = orjson.loads(raw)["error"]
                text = f"{err['code']}: {err['message']}"
            except (orjson.JSONDecodeError, KeyError, TypeError):
                text = raw[:200].decode("utf-8", "replace") or str(e.reason)
            hint = " (set RAFTMEM_ADMIN_TOKEN to the node's admin token)" if e.code == 401 else ""
            raise click.ClickException(f"{method} {path}: HTTP {e.code} {text}{hint}") from None
        except (OSError, orjson.JSONDecodeError) as e:
            raise click.ClickException(f"cannot reach {self.base}: {e}") from None


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell; None shows as '-'."""
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def _admin_options(fn: Any) -> Any:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the node's JSON answer.")(fn)
    fn = click.option("--timeout", type=float, default=10.0, show_default=True,
                      help="Seconds to wait for the node.")(fn)
    fn = click.option("--node", "node_addr", default="127.0.0.1:7001", show_default=True,
                      envvar="RAFTMEM_NODE",
                      help="API address (host:port or URL) of any node [env RAFTMEM_NODE].")(fn)
    return fn


def _client(node_addr: str, timeout: float) -> AdminClient:
    return AdminClient(node_addr, os.environ.get("RAFTMEM_ADMIN_TOKEN") or None, timeout)


def _echo_json(body: Any) -> None:
    click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


@main.group()
def admin() -> None:
    """Inspect placement through any node's admin API (token: RAFTMEM_ADMIN_TOKEN)."""


@admin.command("cluster")
@_admin_options
def admin_cluster(node_addr: str, timeout: float, as_json: bool) -> None:
    """Nodes, groups (as the answering node's replicas see them) and the routing epoch."""
    body = _client(node_addr, timeout).call("GET", "/admin/cluster")
    if as_json:
        _echo_json(body)
        return
    epoch = body.get("routing", {}).get("epoch", {})
    click.echo(f"cluster {body.get('cluster_id')}  answered by {body.get('node')}  "
               f"routing epoch v{epoch.get('version')}/c{epoch.get('conf_ver')}")
    click.echo("")
    click.echo(format_table(["NODE", "API", "RAFT"],
                            [[n.get("id"), n.get("api"), n.get("raft")] for n in body.get("nodes", [])]))
    click.echo("")
    replicas = body.get("routing", {}).get("groups", {})
    rows = [[gid, g.get("role"), g.get("leader"), g.get("term"), g.get("commit_index"),
             g.get("applied_index"), " ".join(replicas.get(gid, []))]
            for gid, g in sorted(body.get("groups", {}).items(), key=lambda kv: int(kv[0]))]
    click.echo(format_table(["GROUP", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "REPLICAS"],
                            rows))


@admin.command("ranges")
@_admin_options
def admin_ranges(node_addr: str, timeout: float, as_json: bool) -> None:
    """Every range: owning group, the version it was received at, leader, replicas."""
    body = _client(node_addr, timeout).call("GET", "/admin/ranges")
    if as_json:
        _echo_json(body)
        return
    epoch = body["epoch"]
    click.echo(f"routing epoch v{epoch['version']}/c{epoch['conf_ver']} on {body['node']}"
               f" ({body['routing_refreshes']} refreshes)")
    rows = [[r["start"], r["end"], r["group"], r["range_version"], r["leader"],
             " ".join(r["replicas"]), "yes" if r["confirmed"] else "NO"]
            for r in body["ranges"]]
    click.echo(format_table(["START", "END", "GROUP", "VERSION", "LEADER", "REPLICAS",
                             "CONFIRMED"], rows))


@admin.command("rebalance")
@click.option("--dry-run", is_flag=True, help="Only show the plan and why (all there is yet).")
@_admin_options
def admin_rebalance(dry_run: bool, node_addr: str, timeout: float, as_json: bool) -> None:
    """The placement planner's operators for the cluster, with reasons."""
    path = "/admin/rebalance?dry_run=true" if dry_run else "/admin/rebalance"
    body = _client(node_addr, timeout).call("POST", path)
    if as_json:
        _echo_json(body)
        return
    view = body["view"]
    states = ", ".join(f"{n['id']} {n['state']}" for n in view["nodes"])
    click.echo(f"view from {body['node']}: {states}; {len(view['groups'])} groups, "
               f"{view['replicas']} replicas each")
    ops = body["operators"]
    if not ops:
        click.echo("nothing to do: placement rules and balance goals are met")
        return
    rows = [[i, op["kind"], op["group"], op["node"], op["target"], op["conf_ver"], op["reason"]]
            for i, op in enumerate(ops, 1)]
    click.echo(format_table(["#", "OPERATOR", "GROUP", "NODE", "TARGET", "CONF_VER", "REASON"],
                            rows))
    if body.get("dry_run"):
        click.echo("(dry run: nothing was changed)")


@admin.command("operators")
@_admin_options
def admin_operators(node_addr: str, timeout: float, as_json: bool) -> None:
    """Operators in progress."""
    body = _client(node_addr, timeout).call("GET", "/admin/operators")
    if as_json:
        _echo_json(body)
        return
    if not body["operators"]:
        click.echo(f"no operators ({body['message']})")
        return
    click.echo(format_table(["OPERATOR", "GROUP", "NODE", "TARGET", "REASON"],
                            [[o["kind"], o["group"], o["node"], o["target"], o["reason"]]
                             for o in body["operators"]]))


if __name__ == "__main__":
    main()
