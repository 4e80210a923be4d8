"""The ``raftmem`` command: ``up`` (a local cluster), ``node`` (one process, or a new
one joining a running cluster: ``--join``), ``status``, ``admin`` (placement: cluster,
ranges, rebalance, operators, nodes list|add|remove).

The CLI is the outermost layer: it may import the API package to run a node.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
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


DEFAULT_DATA_DIR = "./raftmem-data"  # where `raftmem up` keeps cluster.json and cluster.secret
JOIN_FILE = "join.json"  # in a joined node's data dir: {"spec": ..., "me": {id, api, raft}}
# How long `raftmem node --join` keeps asking the placement driver to register the node
# (it answers only on its leader, which may be changing).
JOIN_REGISTER_S = 30.0
NODE_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@main.command()
@click.option("--cluster", "cluster_file", default=None,
              type=click.Path(exists=True, dir_okay=False),
              help="cluster.json describing every node (not for a node that joined).")
@click.option("--id", "node_id", default=None,
              help="This node's id (in cluster.json, or the new node's with --join).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Where this node keeps its data [default: <cluster dir>/<id>; with --join "
                   f"{DEFAULT_DATA_DIR}/<id>]. A joined node restarts with only --data-dir.")
@click.option("--join", "join_url", default=None, metavar="URL",
              help="Join a running cluster through any node (http://host:port): register "
                   "this node with the placement driver, which then gives it replicas.")
@click.option("--api", "api_addr", default=None, metavar="HOST:PORT",
              help="With --join: this node's HTTP API address.")
@click.option("--raft", "raft_addr", default=None, metavar="HOST:PORT",
              help="With --join: this node's Raft address.")
@click.option("--secret-file", type=click.Path(dir_okay=False), default=None,
              help="The cluster secret [default: cluster.secret beside --cluster's file; "
                   f"without --cluster RAFTMEM_SECRET, else {DEFAULT_DATA_DIR}/cluster.secret].")
@click.option("--no-fsync", is_flag=True,
              help="Do not fsync the Raft log before acknowledging (survives kill -9, not power loss).")
@click.option("--json-logs", is_flag=True, help="Log JSON lines instead of console text.")
@click.option("--access-log", type=click.Choice(["all", "errors", "off"]), default="errors",
              show_default=True,
              help="HTTP requests to log: every one, only those answered 5xx, dropped or "
                   "slower than 1 s, or none.")
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
def node(cluster_file: str | None, node_id: str | None, data_dir: str | None,
         join_url: str | None, api_addr: str | None, raft_addr: str | None,
         secret_file: str | None, no_fsync: bool, json_logs: bool, access_log: str,
         admin_token: str | None, max_body_bytes: int, write_timeout: float,
         read_barrier: str, unsafe_local_reads: bool, unsafe_session_ignore_token: bool,
         unsafe_lease_without_stickiness: bool) -> None:
    """Run one node process (raft groups + HTTP API) until SIGTERM.

    \b
    A node of the cluster description:  raftmem node --cluster FILE --id ID
    A new node joining a running one:   raftmem node --join URL --id ID --api HOST:PORT
                                                     --raft HOST:PORT --data-dir DIR
    A joined node, restarted:           raftmem node --data-dir DIR
    """
    from api.server import run_node

    opts = NodeOptions(
        durable=not no_fsync, json_logs=json_logs, access_log=access_log,
        admin_token=admin_token,
        max_body_bytes=max_body_bytes, write_timeout_s=write_timeout,
        read_barrier=read_barrier, unsafe_local_reads=unsafe_local_reads,
        unsafe_session_ignore_token=unsafe_session_ignore_token,
        unsafe_lease_without_stickiness=unsafe_lease_without_stickiness,
    )
    if join_url is not None:
        if cluster_file is not None:
            raise click.UsageError("--join and --cluster exclude each other: a joining node "
                                   "gets the cluster description from the cluster")
        me = _joining_node(node_id, api_addr, raft_addr)
        data_dir = data_dir or os.path.join(DEFAULT_DATA_DIR, me.id)
        saved = _load_join(data_dir)
        if saved is not None and saved[1] != me:
            raise click.UsageError(
                f"{os.path.join(data_dir, JOIN_FILE)} is node {saved[1].id} "
                f"({saved[1].api}, {saved[1].raft}), not {me.id} ({me.api}, {me.raft}); "
                "use another --data-dir")
        _check_ports_free(me)
        secret, source = _joining_secret(secret_file)
        spec = join_cluster(join_url, me, secret, source)
        os.makedirs(data_dir, exist_ok=True)
        _save_join(data_dir, spec, me)
        click.echo(f"joined cluster {spec.cluster_id} as {me.id}; starting", err=True)
        run_node(spec, me.id, data_dir, secret, opts, joining=me)
        return
    if api_addr is not None or raft_addr is not None:
        raise click.UsageError("--api and --raft are for --join (a node of the cluster "
                               "description has its addresses in cluster.json)")
    if cluster_file is None:
        if data_dir is None:
            raise click.UsageError("give --cluster FILE --id ID, or --join URL (a new node), "
                                   "or --data-dir DIR of a node that joined")
        saved = _load_join(data_dir)
        if saved is None:
            raise click.UsageError(f"{os.path.join(data_dir, JOIN_FILE)} does not exist: "
                                   "this is no joined node's data dir; give --cluster and --id")
        spec, me = saved
        if node_id is not None and node_id != me.id:
            raise click.BadParameter(f"{data_dir} is node {me.id}'s data dir",
                                     param_hint="--id")
        secret, _ = _joining_secret(secret_file)
        run_node(spec, me.id, data_dir, secret, opts, joining=me)
        return
    spec = ClusterSpec.load(cluster_file)
    if node_id is None:
        raise click.UsageError("--cluster needs --id")
    try:
        spec.node(node_id)
    except KeyError as e:
        raise click.BadParameter(str(e), param_hint="--id") from None
    if secret_file is not None:
        secret = _read_secret_file(secret_file)
    else:
        try:
            secret = load_secret(cluster_file)
        except FileNotFoundError as e:
            raise click.ClickException(str(e)) from None
    data_dir = data_dir or os.path.join(os.path.dirname(os.path.abspath(cluster_file)), node_id)
    run_node(spec, node_id, data_dir, secret, opts)


# --- joining a running cluster ---------------------------------------------------------


def _joining_node(node_id: str | None, api: str | None, raft: str | None) -> NodeSpec:
    missing = [flag for flag, v in (("--id", node_id), ("--api", api), ("--raft", raft))
               if v is None]
    if missing:
        raise click.UsageError(f"--join needs {', '.join(missing)}")
    assert node_id is not None and api is not None and raft is not None
    if not NODE_ID_RE.fullmatch(node_id):
        raise click.BadParameter("1..64 characters of [A-Za-z0-9_.-]", param_hint="--id")
    for flag, addr in (("--api", api), ("--raft", raft)):
        try:
            parse_addr(addr)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=flag) from None
    if api == raft:
        raise click.BadParameter("--api and --raft must differ", param_hint="--raft")
    return NodeSpec(node_id, api, raft)


def _check_ports_free(me: NodeSpec) -> None:
    busy = [a for a in (me.api, me.raft) if not _port_free(a)]
    if busy:
        raise click.ClickException(f"address(es) already in use on this machine: "
                                   f"{', '.join(busy)}")


def _read_secret_file(path: str) -> bytes:
    try:
        with open(path) as f:
            secret = f.read().strip().encode()
    except OSError as e:
        raise click.ClickException(f"cannot read the cluster secret: {e}") from None
    if not secret:
        raise click.ClickException(f"{path} is empty: it should hold the cluster secret")
    return secret


def _joining_secret(secret_file: str | None) -> tuple[bytes, str]:
    """The cluster secret of a node without cluster.json, and where it came from."""
    if secret_file is not None:
        return _read_secret_file(secret_file), secret_file
    env = os.environ.get("RAFTMEM_SECRET")
    if env:
        return env.encode(), "RAFTMEM_SECRET"
    default = secret_path(os.path.join(DEFAULT_DATA_DIR, "cluster.json"))
    if not os.path.exists(default):
        raise click.ClickException(
            f"no cluster secret: {default} does not exist; give --secret-file (the "
            "cluster.secret beside the cluster's cluster.json) or set RAFTMEM_SECRET")
    return _read_secret_file(default), default


def _load_join(data_dir: str) -> tuple[ClusterSpec, NodeSpec] | None:
    path = os.path.join(data_dir, JOIN_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, "rb") as f:
            d = orjson.loads(f.read())
        me = d["me"]
        return ClusterSpec.from_dict(d["spec"]), NodeSpec(str(me["id"]), str(me["api"]),
                                                         str(me["raft"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise click.ClickException(f"{path} is unreadable: {e!r}") from None


def _save_join(data_dir: str, spec: ClusterSpec, me: NodeSpec) -> None:
    path = os.path.join(data_dir, JOIN_FILE)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps({"spec": spec.to_dict(), "me": me.to_dict()},
                             option=orjson.OPT_INDENT_2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _base_url(addr: str) -> str:
    return (addr if "://" in addr else f"http://{addr}").rstrip("/")


def join_cluster(url: str, me: NodeSpec, secret: bytes, secret_source: str,
                 timeout: float = JOIN_REGISTER_S) -> ClusterSpec:
    """Register ``me`` with the cluster any node of which answers at ``url``; its spec.

    ``describe`` (any node) gives the cluster description and the placement driver's
    state; ``register`` is answered only by the placement driver's leader, so it is
    tried at ``url`` and then at each node hosting the placement driver, until one
    accepts it or ``timeout`` passes.
    """
    from raftmem.node import INTERNAL_HEADER, internal_credential
    from raftmem.pd import PD_GROUP

    headers = {INTERNAL_HEADER: internal_credential(secret)}
    base = _base_url(url)

    def refused_secret(at: str) -> click.ClickException:
        return click.ClickException(
            f"{at} refused this node's internal credential (HTTP 403): the cluster secret "
            f"from {secret_source} is not the cluster's")

    status, body, problem = http_json("POST", base + "/internal/placement/describe", {},
                                      headers, timeout=10.0)
    if status == 0:
        raise click.ClickException(f"cannot reach {base}: {problem}")
    if status == 403:
        raise refused_secret(base)
    if status != 200 or not isinstance(body, dict) or "spec" not in body:
        raise click.ClickException(f"{base} did not describe the cluster: HTTP {status} "
                                   f"{problem}")
    try:
        spec = ClusterSpec.from_dict(body["spec"])
    except (KeyError, TypeError, ValueError) as e:
        raise click.ClickException(f"{base} sent an unreadable cluster description: "
                                   f"{e!r}") from None
    state = body.get("state") or {}
    nodes = state.get("nodes") or {}
    if me.id in {n.id for n in spec.nodes} \
            and (nodes.get(me.id) or {}).get("state") != "removed":
        # A node of the description joins again (fresh, hosting nothing until
        # the placement driver gives it replicas) only once it was drained and
        # removed: before that, its replicas are still the cluster's.
        raise click.ClickException(
            f"node id {me.id} is taken: it is in the cluster description (run that node "
            "with raftmem node --cluster cluster.json --id ...; to bring it back with an "
            "empty data directory, remove it first: raftmem admin nodes remove "
            f"{me.id} --wait)")
    pd = (state.get("groups") or {}).get(str(PD_GROUP)) or {}
    candidates = [base]
    for n in pd.get("voters") or [n.id for n in spec.nodes[:3]]:
        api = (nodes.get(n) or {}).get("api") or next(
            (x.api for x in spec.nodes if x.id == n), None)
        if api and _base_url(api) not in candidates:
            candidates.append(_base_url(api))
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        for at in candidates:
            status, answer, problem = http_json(
                "POST", at + "/internal/placement/register", me.to_dict(), headers,
                timeout=10.0)
            if status == 200:
                return spec
            if status == 403:
                raise refused_secret(at)
            if status == 400 and _error_code(answer) == "conflict":
                raise click.ClickException(f"node id {me.id} is taken or its addresses are "
                                           f"in use: {problem}")
            if status not in (0, 503):
                raise click.ClickException(f"{at} refused the registration: HTTP {status} "
                                           f"{problem}")
            last = f"{at}: {problem or f'HTTP {status}'}"
        if time.monotonic() >= deadline:
            raise click.ClickException(
                f"the placement driver did not register {me.id} within {timeout:g}s "
                f"(last: {last})")
        time.sleep(0.5)  # between rounds of a retry loop with its own deadline


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


def _error_code(body: Any) -> str | None:
    err = body.get("error") if isinstance(body, dict) else None
    return str(err.get("code")) if isinstance(err, dict) else None


def http_json(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
              timeout: float = 10.0) -> tuple[int, Any, str]:
    """(status, parsed JSON answer or None, problem): status 0 when there was no HTTP
    answer; problem is "" on 2xx, else the error's "code: message" or what went wrong."""
    data = None if body is None else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, method=method)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, orjson.loads(r.read()), ""
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            answer = orjson.loads(raw)
            err = answer["error"]
            return e.code, answer, f"{err['code']}: {err['message']}"
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return e.code, None, raw[:200].decode("utf-8", "replace") or str(e.reason)
    except urllib.error.URLError as e:
        return 0, None, str(e.reason)
    except (OSError, orjson.JSONDecodeError) as e:
        return 0, None, str(e) or repr(e)


def local_spec(nodes: int, groups: int, host: str, api_port: int, raft_port: int) -> ClusterSpec:
    return ClusterSpec(
        nodes=tuple(
            NodeSpec(f"n{i + 1}", f"{host}:{api_port + i}", f"{host}:{raft_port + i}")
            for i in range(nodes)
        ),
        groups=groups,
        # Three replicas per group (fewer with fewer nodes); with more nodes
        # each hosts some groups and forwards requests for the others.
        replicas=min(3, nodes),
        cluster_id=f"c-{os.urandom(4).hex()}",
    )


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), default=DEFAULT_DATA_DIR,
              show_default=True, help="Folder for all nodes' data; reused on restart.")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True,
              help="Nodes of a new cluster; each hosts a replica of every group.")
@click.option("--groups", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Shard groups (only for a new cluster).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--api-port", type=int, default=7001, show_default=True, help="First node's API port.")
@click.option("--raft-port", type=int, default=7101, show_default=True, help="First node's Raft port.")
@click.option("--no-fsync", is_flag=True, help="Pass --no-fsync to every node.")
@click.option("--access-log", type=click.Choice(["all", "errors", "off"]), default="errors",
              show_default=True, help="Pass --access-log to every node.")
@click.option("--ready-timeout", type=float, default=60.0, show_default=True)
def up(data_dir: str, nodes: int, groups: int, host: str, api_port: int, raft_port: int,
       no_fsync: bool, access_log: str, ready_timeout: float) -> None:
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
               "--data-dir", ndir, "--json-logs", "--access-log", access_log]
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
@click.option("--data-dir", type=click.Path(file_okay=False), default=DEFAULT_DATA_DIR,
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

# How often `admin rebalance` and `admin nodes remove --wait` ask for progress.
POLL_S = 0.5
# A single admin request's time limit when --timeout is the whole wait's.
REQUEST_S = 10.0


class AdminError(click.ClickException):
    """An admin request that failed; ``status`` 0 when the node did not answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AdminClient:
    """HTTP to one node's /admin routes, with the admin token from RAFTMEM_ADMIN_TOKEN."""

    def __init__(self, node: str, token: str | None, timeout: float) -> None:
        self.base = _base_url(node)
        self.token = token
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The parsed JSON answer; an AdminError with the server's error otherwise."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        status, answer, problem = http_json(method, self.base + path, body, headers,
                                            self.timeout)
        if status == 0:
            raise AdminError(f"cannot reach {self.base}: {problem}", 0)
        if not 200 <= status < 300:
            hint = " (set RAFTMEM_ADMIN_TOKEN to the node's admin token)" if status == 401 else ""
            raise AdminError(f"{method} {path}: HTTP {status} {problem}{hint}", status)
        if answer is None:
            raise AdminError(f"{method} {path}: HTTP {status} without a JSON answer", status)
        return answer


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Columns padded to their widest cell; None shows as '-'."""
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def _node_option(fn: Any) -> Any:
    return click.option("--node", "node_addr", default="127.0.0.1:7001", show_default=True,
                        envvar="RAFTMEM_NODE",
                        help="API address (host:port or URL) of any node [env RAFTMEM_NODE].")(fn)


def _json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print the node's JSON answer.")(fn)


def _admin_options(fn: Any) -> Any:
    fn = _json_option(fn)
    fn = click.option("--timeout", type=float, default=10.0, show_default=True,
                      help="Seconds to wait for the node.")(fn)
    return _node_option(fn)


def _client(node_addr: str, timeout: float) -> AdminClient:
    return AdminClient(node_addr, os.environ.get("RAFTMEM_ADMIN_TOKEN") or None, timeout)


def _echo_json(body: Any) -> None:
    click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


@main.group()
def admin() -> None:
    """Placement through any node's admin API (token: RAFTMEM_ADMIN_TOKEN)."""


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
             " ".join(r["replicas"]), "yes" if r["confirmed"] else "NO",
             "moving" if r.get("frozen") else ""]
            for r in body["ranges"]]
    click.echo(format_table(["START", "END", "GROUP", "VERSION", "LEADER", "REPLICAS",
                             "CONFIRMED", "STATE"], rows))


@admin.command("move-range")
@click.option("--start", required=True, help="First point of the range (16 hex digits).")
@click.option("--end", required=True, help="End of the range, exclusive (16 hex digits or 'end').")
@click.option("--to", "to_group", type=int, required=True, help="The group to own it.")
@_json_option
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait for the move (it copies the range's memories).")
@_node_option
def admin_move_range(start: str, end: str, to_group: int, as_json: bool, timeout: float,
                     node_addr: str) -> None:
    """Move a range of the ring to another group, or finish a move that stopped.

    Writes to the range wait while it is copied; the same command again after a
    failure finishes the move (every step is idempotent).
    """
    body = _client(node_addr, timeout).call(
        "POST", "/admin/ranges/move", {"start": start, "end": end, "to_group": to_group})
    if as_json:
        _echo_json(body)
        return
    click.echo(f"move {body['move']}: group {body['source']} -> {body['target']}")
    click.echo(format_table(["STEP", "AT (s)", "DETAILS"], [
        [st["step"], st["seconds"],
         " ".join(f"{k}={v}" for k, v in st.items() if k not in ("step", "seconds"))]
        for st in body["steps"]]))


# --- operators and rebalancing ----------------------------------------------------------


def _who(op: dict[str, Any]) -> str:
    return f"{op['node']}->{op['target']}" if op.get("target") else str(op["node"])


def _step(op: dict[str, Any]) -> str:
    """``catch_up 4/5``: the step awaited and its number; a finished operator's last."""
    if op["status"] != "running":
        return f"{op['step_index']}/{op['steps']}"
    return f"{op['step']} {op['step_index']}/{op['steps']}"


def _short(text: Any, limit: int = 80) -> Any:
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return text[:limit - 1] + "…"


def _operator_rows(ops: list[dict[str, Any]]) -> list[list[Any]]:
    return [[o["id"], o["kind"], o["group"], _who(o), _step(o), f"{o['elapsed']:.1f}s",
             o["status"], _short(o.get("error") or o.get("last_error"))] for o in ops]


OPERATOR_HEADERS = ["ID", "KIND", "GROUP", "NODE", "STEP", "ELAPSED", "STATUS", "ERROR"]


def _finished(progress: dict[str, Any]) -> int:
    c = progress["counts"]
    return int(c["done"]) + int(c["failed"]) + int(c["cancelled"])


class _Watch:
    """Counts the operators of one rebalance: those running when it started, and any
    started after; ``finished`` of ``total`` for the progress bar."""

    def __init__(self, progress: dict[str, Any]) -> None:
        self.rebase(progress)

    def rebase(self, progress: dict[str, Any]) -> None:
        # A new placement driver leader has an executor of its own (counts from zero).
        self.leader = progress.get("pd_leader")
        self.tracked = int(progress["counts"]["running"])
        self.started = int(progress["counts"]["started"])
        self.finished_before = _finished(progress)
        self.first_id = min([o["id"] for o in progress["running"]] or [
            max([o["id"] for k in ("finished", "failed", "cancelled") for o in progress[k]]
                or [0]) + 1])

    def see(self, progress: dict[str, Any]) -> tuple[int, int]:
        if progress.get("pd_leader") != self.leader:
            self.rebase(progress)
        total = self.tracked + int(progress["counts"]["started"]) - self.started
        done = _finished(progress) - self.finished_before
        return min(done, total), total

    def failed(self, progress: dict[str, Any]) -> list[dict[str, Any]]:
        return [o for k in ("failed", "cancelled") for o in progress[k]
                if o["id"] >= self.first_id]


def _running_text(progress: dict[str, Any], limit: int = 120) -> str:
    text = "; ".join(f"g{o['group']} {o['kind']} {_who(o)} {_step(o)}"
                     for o in progress["running"])
    return _short(text, limit) or ("balanced" if progress["balanced"] else "planning")


def watch_operators(client: AdminClient, progress: dict[str, Any], timeout: float,
                    ) -> tuple[dict[str, Any], bool, _Watch]:
    """Poll the executor every POLL_S until nothing runs and it is balanced (True), or
    ``timeout`` seconds pass (False), with a progress bar on stderr. When the placement
    driver does not rebalance by itself (``auto_rebalance`` false), each poll runs the
    next pass (POST /admin/rebalance) instead of only reading progress."""
    from tqdm import tqdm

    deadline = time.monotonic() + timeout
    watch = _Watch(progress)
    done, total = watch.see(progress)
    with tqdm(total=total, desc="operators", unit="op", file=sys.stderr,
              bar_format="{desc}: {n}/{total} finished |{bar}| {elapsed} {postfix}") as bar:
        while True:
            done, total = watch.see(progress)
            finished = not progress["running"] and progress["balanced"]
            # nothing to do at all shows as one full step rather than 0/0
            bar.total, bar.n = (total, done) if total else (1, int(finished))
            bar.set_postfix_str(_running_text(progress), refresh=False)
            bar.refresh()
            if finished:
                return progress, True, watch
            if time.monotonic() >= deadline:
                return progress, False, watch
            time.sleep(POLL_S)  # the poll interval; the loop has its own deadline
            try:
                if progress.get("auto_rebalance") is False:
                    progress = client.call("POST", "/admin/rebalance")["progress"]
                else:
                    progress = client.call("GET", "/admin/operators")
            except AdminError as e:
                if e.status not in (0, 503):
                    raise
                # no answer, or the placement driver is between leaders: ask again
                bar.set_postfix_str(_short(f"waiting: {e.message}", 120), refresh=True)


@admin.command("rebalance")
@click.option("--dry-run", is_flag=True, help="Only show the plan and why; nothing changes.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds to wait until the cluster is balanced (exit 1 after).")
@_json_option
@_node_option
def admin_rebalance(dry_run: bool, timeout: float, as_json: bool, node_addr: str) -> None:
    """Run the placement driver's operators until the cluster is balanced.

    Without --dry-run: start a pass, then follow the operators (every 0.5 s, a progress
    bar on stderr) until none runs and the planner finds nothing to do (exit 0) or
    --timeout passes (exit 1). Failed operators are printed with their errors.
    --json prints the final progress (the executor's, as GET /admin/operators).
    """
    client = _client(node_addr, min(timeout, REQUEST_S))
    if dry_run:
        body = client.call("POST", "/admin/rebalance?dry_run=true")
        _show_plan(body, as_json)
        return
    body = client.call("POST", "/admin/rebalance")
    started = body.get("started", [])
    if not as_json:
        running = body["progress"]["counts"]["running"]
        click.echo(f"pass run by {body['node']}: {len(started)} operator(s) started, "
                   f"{running} running")
        if started:
            click.echo(format_table(["ID", "KIND", "GROUP", "NODE", "REASON"],
                                    [[o["id"], o["kind"], o["group"], _who(o), o["reason"]]
                                     for o in started]))
    progress, balanced, watch = watch_operators(client, body["progress"], timeout)
    failed = watch.failed(progress)
    if as_json:
        _echo_json(progress)
    else:
        done, total = watch.see(progress)
        if balanced:
            click.echo(f"balanced: {done} of {total} operator(s) finished, "
                       f"{len(failed)} failed or cancelled")
        else:
            click.echo(f"not balanced after {timeout:g}s: {done} of {total} operator(s) "
                       f"finished; running: {_running_text(progress, 400)}")
        if failed:
            click.echo("failed or cancelled:")
            click.echo(format_table(OPERATOR_HEADERS, _operator_rows(failed)))
    if not balanced:
        sys.exit(1)


def _show_plan(body: dict[str, Any], as_json: bool) -> None:
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
    click.echo("(dry run: nothing was changed)")


@admin.command("operators")
@click.option("--recent", type=click.IntRange(0, 1000), default=10, show_default=True,
              help="Finished, failed and cancelled operators shown (newest first).")
@_admin_options
def admin_operators(recent: int, node_addr: str, timeout: float, as_json: bool) -> None:
    """Running and recent operators of the placement driver's executor."""
    body = _client(node_addr, timeout).call("GET", "/admin/operators")
    if as_json:
        _echo_json(body)
        return
    c = body["counts"]
    auto = {True: "on", False: "off"}.get(body.get("auto_rebalance"), "?")
    click.echo(f"placement driver leader {body.get('pd_leader', '?')}: "
               f"{'balanced' if body['balanced'] else 'not balanced'}, {body['passes']} passes, "
               f"auto rebalance {auto}; live: {' '.join(body.get('live', [])) or '-'}")
    click.echo(f"operators: {c['running']} running, {c['started']} started, {c['done']} done, "
               f"{c['failed']} failed, {c['cancelled']} cancelled")
    load = body.get("load") or {}
    if load:
        click.echo("")
        click.echo(format_table(["NODE", "REPLICAS", "LEADERS", "DATA"], [
            [n, v.get("replicas"), v.get("leaders"),
             "-" if v.get("data_bytes") is None else f"{v['data_bytes'] / 2**20:.1f} MiB"]
            for n, v in sorted(load.items())]))
    history = sorted([o for k in ("finished", "failed", "cancelled") for o in body[k]],
                     key=lambda o: o["id"], reverse=True)[:recent]
    ops = sorted(body["running"], key=lambda o: o["id"]) + history
    if not ops:
        click.echo("no operators")
        return
    click.echo("")
    click.echo(format_table(OPERATOR_HEADERS, _operator_rows(ops)))


# --- nodes -----------------------------------------------------------------------------


@admin.group("nodes")
def admin_nodes() -> None:
    """The placement driver's node registry: list, add, remove."""


@admin_nodes.command("list")
@_admin_options
def nodes_list(node_addr: str, timeout: float, as_json: bool) -> None:
    """Registered nodes with their state and the groups they hold."""
    body = _client(node_addr, timeout).call("GET", "/admin/nodes")
    if as_json:
        _echo_json(body)
        return
    click.echo(format_table(["NODE", "API", "RAFT", "STATE", "GROUPS"],
                            [[n["id"], n["api"], n["raft"], n["state"],
                              " ".join(str(g) for g in n.get("groups", [])) or None]
                             for n in body["nodes"]]))


@admin_nodes.command("add")
@click.option("--id", "node_id", required=True, help="The new node's id.")
@click.option("--api", "api_addr", required=True, metavar="HOST:PORT",
              help="Its HTTP API address.")
@click.option("--raft", "raft_addr", required=True, metavar="HOST:PORT",
              help="Its Raft address.")
@_admin_options
def nodes_add(node_id: str, api_addr: str, raft_addr: str, node_addr: str, timeout: float,
              as_json: bool) -> None:
    """Register a node; the placement driver then gives it replicas.

    The node process itself is started with `raftmem node --join` (which registers
    it too); registering first is for a node started later.
    """
    body = _client(node_addr, timeout).call(
        "POST", "/admin/nodes", {"id": node_id, "api": api_addr, "raft": raft_addr})
    if as_json:
        _echo_json(body)
        return
    n = body["node"]
    what = "registered" if body.get("changed") else "already registered"
    click.echo(f"{n['id']} {what} (api {n['api']}, raft {n['raft']}): {n['state']}")


def _registry_entry(client: AdminClient, node_id: str) -> tuple[bool, dict[str, Any] | None]:
    """(whether the answering node knows the registry, ``node_id``'s entry in it)."""
    nodes = client.call("GET", "/admin/nodes")["nodes"]
    entry = next((n for n in nodes if n["id"] == node_id), None)
    return bool(nodes), entry


@admin_nodes.command("remove")
@click.argument("node_id", metavar="ID")
@click.option("--wait", is_flag=True,
              help="Wait until its replicas have moved and it has left the registry.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="With --wait: seconds to wait (exit 1 after).")
@_json_option
@_node_option
def nodes_remove(node_id: str, wait: bool, timeout: float, as_json: bool,
                 node_addr: str) -> None:
    """Drain node ID: its replicas move to other nodes, then it leaves the registry."""
    from tqdm import tqdm

    client = _client(node_addr, min(timeout, REQUEST_S))
    body = client.call("DELETE", f"/admin/nodes/{urllib.parse.quote(node_id, safe='')}")
    if not as_json:
        click.echo(f"{node_id} is draining: the placement driver moves its replicas away")
    if not wait:
        if as_json:
            _echo_json(body)
        return
    deadline = time.monotonic() + timeout
    held: int | None = None
    entry: dict[str, Any] | None = body.get("node")
    with tqdm(total=1, desc=f"moving {node_id}'s replicas", unit="replica", file=sys.stderr,
              bar_format="{desc}: {n}/{total} |{bar}| {elapsed} {postfix}") as bar:
        while True:
            try:
                known, entry = _registry_entry(client, node_id)
            except AdminError as e:
                if e.status not in (0, 503):
                    raise
                known = False
                bar.set_postfix_str(_short(f"waiting: {e.message}", 120), refresh=True)
            if known and (entry is None or entry["state"] == "removed"):
                bar.n = bar.total
                bar.set_postfix_str("removed", refresh=True)
                break
            if known and entry is not None:
                now = len(entry.get("groups", []))
                held = now if held is None else max(held, now)
                bar.total, bar.n = max(held, 1), held - now
                bar.set_postfix_str(f"{entry['state']}, holds {now}", refresh=True)
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)  # the poll interval; the loop has its own deadline
    removed = known and (entry is None or entry["state"] == "removed")
    if as_json:
        _echo_json({"removed": removed, "node": entry})
    elif removed:
        click.echo(f"{node_id} removed from the registry; its process can be stopped")
    else:
        state = entry["state"] if entry else "unknown"
        click.echo(f"{node_id} not removed after {timeout:g}s (state {state}); "
                   "see raftmem admin operators")
    if not removed:
        sys.exit(1)


if __name__ == "__main__":
    main()
