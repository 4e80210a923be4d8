"""``raftmem admin ...`` and ``raftmem node --join`` against the API (the fake service)
served on a loopback port; ``raftmem node`` stops where it would start serving."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web
from click.testing import CliRunner

import api.server
from api import create_app
from raftmem import cli
from raftmem.cli import format_table, main
from raftmem.config import ClusterSpec, NodeOptions, NodeSpec
from raftmem.placement import planner
from tests.api.fake_service import FAKE_SECRET, FAKE_SPEC, FakeMemoryService

TOKEN = "cli-token"


def _drop(*_: Any) -> Any:
    raise structlog.DropEvent


@pytest.fixture
def server() -> Iterator[tuple[str, FakeMemoryService]]:
    """The API over a fake service, on an ephemeral port, in a thread of its own."""
    fake = FakeMemoryService()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def up() -> None:
        app = create_app(fake, admin_token=TOKEN)
        # The server's access log would land in the output CliRunner captures.
        structlog.configure(processors=[_drop])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["runner"] = runner
        box["port"] = runner.addresses[0][1]

    def run() -> None:
        loop.run_until_complete(up())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the test server did not start"
    try:
        yield f"127.0.0.1:{box['port']}", fake
    finally:
        asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        structlog.reset_defaults()


def run(args: list[str], token: str | None = TOKEN) -> Any:
    env = {"RAFTMEM_ADMIN_TOKEN": token} if token is not None else {"RAFTMEM_ADMIN_TOKEN": ""}
    return CliRunner().invoke(main, ["admin", *args], env=env, catch_exceptions=False)


def test_ranges_table_and_json(server: tuple[str, FakeMemoryService]) -> None:
    addr, _ = server
    res = run(["ranges", "--node", addr])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("routing epoch v1/c1")
    assert lines[1].split() == ["START", "END", "GROUP", "VERSION", "LEADER", "REPLICAS",
                                "CONFIRMED", "STATE"]
    assert lines[2].split() == ["0000000000000000", "end", "0", "1", "fake-1", "fake-1", "yes"]
    res = run(["ranges", "--node", f"http://{addr}", "--json"])
    assert res.exit_code == 0 and orjson.loads(res.output)["ranges"][0]["group"] == 0


def test_move_range_prints_each_step(server: tuple[str, FakeMemoryService]) -> None:
    addr, fake = server
    res = run(["move-range", "--start", "0000000000000000", "--end", "4000000000000000",
               "--to", "1", "--node", addr])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == ("move 0000000000000000-4000000000000000-to-1: "
                                          "group 0 -> 1")
    steps = [line.split()[0] for line in res.output.splitlines()[2:]]
    assert steps == ["freeze", "stage", "release", "activate", "done"]
    assert fake.calls[-1] == ("move_range", ("0000000000000000", "4000000000000000", 1))
    # The API checks the request: a point that is not one is refused before the service.
    res = CliRunner().invoke(main, ["admin", "move-range", "--start", "xyz", "--end", "end",
                                    "--to", "1", "--node", addr],
                             env={"RAFTMEM_ADMIN_TOKEN": TOKEN})
    assert res.exit_code != 0 and "HTTP 400" in res.output


def test_rebalance_dry_run_lists_operators_and_reasons(
    server: tuple[str, FakeMemoryService]
) -> None:
    addr, fake = server
    res = run(["rebalance", "--dry-run", "--node", addr])
    assert res.exit_code == 0, res.output
    assert "OPERATOR" in res.output and "add_learner" in res.output
    assert "balance replicas" in res.output and "(dry run: nothing was changed)" in res.output
    assert fake.calls[-1] == ("rebalance", (True,))
    body = orjson.loads(run(["rebalance", "--dry-run", "--json", "--node", addr]).output)
    assert body["dry_run"] is True and body["operators"]


@pytest.fixture
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI polls every 0.5 s; the fake's executor moves a step per poll anyway."""
    monkeypatch.setattr(cli, "POLL_S", 0.01)


def test_rebalance_runs_until_balanced(
    server: tuple[str, FakeMemoryService], fast_polls: None
) -> None:
    addr, fake = server
    res = run(["rebalance", "--node", addr])
    assert res.exit_code == 0, res.output
    assert "pass run by fake-1: 2 operator(s) started, 2 running" in res.stdout
    assert "add_learner" in res.stdout and "n1->n2" in res.stdout
    assert "balanced: 2 of 2 operator(s) finished, 0 failed or cancelled" in res.stdout
    # the progress bar, on stderr: finished of started, and the running operators' steps
    assert "operators: 2/2 finished" in res.stderr
    assert "g0 add_learner n4 catch_up 4/5" in res.stderr
    assert fake.calls[0] == ("rebalance", (False,))
    polls = [c for c in fake.calls[1:]]
    assert polls and all(c == ("operators", ()) for c in polls)
    assert fake.executor.balanced and all(r["status"] == "done" for r in fake.executor.runs)


def test_rebalance_json_prints_the_final_progress(
    server: tuple[str, FakeMemoryService], fast_polls: None
) -> None:
    addr, _ = server
    res = run(["rebalance", "--json", "--node", addr])
    assert res.exit_code == 0, res.output
    body = orjson.loads(res.stdout)
    assert body["balanced"] is True and body["running"] == []
    assert body["counts"]["done"] == 2 and len(body["finished"]) == 2


def test_rebalance_drives_the_passes_when_auto_rebalance_is_off(
    server: tuple[str, FakeMemoryService], fast_polls: None
) -> None:
    addr, fake = server
    fake.auto_rebalance = False
    res = run(["rebalance", "--node", addr])
    assert res.exit_code == 0, res.output
    assert "balanced: 2 of 2" in res.stdout
    # every poll was a pass of its own: nothing else would move the operators
    assert set(fake.calls) == {("rebalance", (False,))} and len(fake.calls) > 2


def test_rebalance_timeout_exits_1_and_prints_failed_operators(
    server: tuple[str, FakeMemoryService], fast_polls: None
) -> None:
    addr, fake = server
    fake.executor.stuck_groups = {0}
    fake.executor.fail_groups = {1}
    res = run(["rebalance", "--node", addr, "--timeout", "0.5"])
    assert res.exit_code == 1, res.output
    assert "not balanced after 0.5s: 1 of 2 operator(s) finished" in res.stdout
    assert "running: g0 add_learner n4 check 1/5" in res.stdout
    lines = res.stdout.splitlines()
    table = lines[lines.index("failed or cancelled:") + 1:]
    assert table[0].split() == ["ID", "KIND", "GROUP", "NODE", "STEP", "ELAPSED", "STATUS",
                                "ERROR"]
    assert table[1].split()[:7] == ["2", "transfer_leader", "1", "n1->n2", "2/2", "1.0s",
                                    "failed"]
    assert "transfer_leader: timed out after 30s" in table[1]


def test_rebalance_when_already_balanced(
    server: tuple[str, FakeMemoryService], fast_polls: None
) -> None:
    addr, fake = server
    fake.executor.runs = [{"id": 9, "group": g, "kind": "add_learner", "status": "done"}
                          for g in (0, 1)]  # the drawn cluster's operators ran before
    res = run(["rebalance", "--node", addr])
    assert res.exit_code == 0, res.output
    assert "0 operator(s) started, 0 running" in res.stdout and "balanced: 0 of 0" in res.stdout
    assert fake.calls == [("rebalance", (False,))]


def test_operators_table(server: tuple[str, FakeMemoryService]) -> None:
    addr, fake = server
    fake.auto_rebalance = False  # the table shows the executor as it stands
    res = run(["operators", "--node", addr])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1] == "no operators"
    fake.executor.fail_groups = {1}
    fake.executor.run_pass(planner.plan(planner.parse_view(fake.VIEW)))
    fake.executor.run_pass([])
    fake.executor.run_pass([])
    res = run(["operators", "--node", addr])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == ("placement driver leader fake-1: not balanced, 3 passes, "
                        "auto rebalance off; live: fake-1")
    assert lines[1] == "operators: 1 running, 2 started, 0 done, 1 failed, 0 cancelled"
    assert lines[3].split() == ["NODE", "REPLICAS", "LEADERS", "DATA"]
    assert lines[4].split() == ["fake-1", "2", "1", "3.0", "MiB"]
    lines = lines[3:]  # the operators after the load table
    assert lines[3].split() == ["ID", "KIND", "GROUP", "NODE", "STEP", "ELAPSED", "STATUS",
                                "ERROR"]
    assert lines[4].split() == ["1", "add_learner", "0", "n4", "add_learner", "3/5", "1.0s",
                                "running", "-"]
    assert lines[5].split()[:7] == ["2", "transfer_leader", "1", "n1->n2", "2/2", "1.0s",
                                    "failed"]
    assert lines[5].endswith("transfer_leader: timed out after 30s")
    body = orjson.loads(run(["operators", "--json", "--node", addr]).stdout)
    assert body["counts"]["failed"] == 1


# --- nodes ------------------------------------------------------------------------------


def test_nodes_add_list_remove(server: tuple[str, FakeMemoryService], fast_polls: None) -> None:
    addr, fake = server
    res = run(["nodes", "add", "--id", "n4", "--api", "127.0.0.1:7004", "--raft",
               "127.0.0.1:7104", "--node", addr])
    assert res.exit_code == 0, res.output
    assert res.output == "n4 registered (api 127.0.0.1:7004, raft 127.0.0.1:7104): up\n"
    res = run(["nodes", "add", "--id", "n4", "--api", "127.0.0.1:7004", "--raft",
               "127.0.0.1:7104", "--node", addr])
    assert res.output.startswith("n4 already registered")
    res = run(["nodes", "list", "--node", addr])
    assert res.exit_code == 0, res.output
    assert [ln.split() for ln in res.output.splitlines()] == [
        ["NODE", "API", "RAFT", "STATE", "GROUPS"],
        ["fake-1", "127.0.0.1:7000", "127.0.0.1:7100", "up", "0", "1", "65000"],
        ["n4", "127.0.0.1:7004", "127.0.0.1:7104", "up", "0", "1"]]
    res = run(["nodes", "remove", "n4", "--wait", "--node", addr])
    assert res.exit_code == 0, res.output
    assert "n4 is draining" in res.stdout
    assert "n4 removed from the registry" in res.stdout
    assert "moving n4's replicas: 2/2" in res.stderr
    assert fake.registry["n4"]["state"] == "removed"
    assert ("remove_node", ("n4",)) in fake.calls


def test_nodes_remove_without_wait_answers_at_once(server: tuple[str, FakeMemoryService]) -> None:
    addr, fake = server
    asyncio.run(fake.add_node("n4", "127.0.0.1:7004", "127.0.0.1:7104"))
    res = run(["nodes", "remove", "n4", "--json", "--node", addr])
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout)["node"]["state"] == "draining"
    assert "describe" not in {name for name, _ in fake.calls}


def test_nodes_remove_wait_times_out(
    server: tuple[str, FakeMemoryService], fast_polls: None
) -> None:
    addr, fake = server
    asyncio.run(fake.add_node("n4", "127.0.0.1:7004", "127.0.0.1:7104"))
    fake.drain_stuck = True
    res = run(["nodes", "remove", "n4", "--wait", "--timeout", "0.3", "--node", addr])
    assert res.exit_code == 1, res.output
    assert "n4 not removed after 0.3s (state draining)" in res.stdout


def test_nodes_errors_are_clear(server: tuple[str, FakeMemoryService]) -> None:
    addr, fake = server
    res = run(["nodes", "add", "--id", "n4", "--api", "127.0.0.1", "--raft", "127.0.0.1:7104",
               "--node", addr])
    assert res.exit_code == 1
    assert "HTTP 400 invalid_request: api: does not match" in res.output
    res = run(["nodes", "remove", "n9", "--node", addr])
    assert res.exit_code == 1 and "HTTP 400 not_found: node n9 is not registered" in res.output
    res = run(["nodes", "add", "--id", "n4", "--api", "127.0.0.1:7004", "--raft",
               "127.0.0.1:7104", "--node", addr], token=None)
    assert res.exit_code == 1 and "HTTP 401" in res.output
    assert "n4" not in fake.registry


# --- raftmem node --join ----------------------------------------------------------------


def _free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `raftmem node` would serve: api.server.run_node's arguments, recorded."""
    calls: list[dict[str, Any]] = []

    def run_node(spec: ClusterSpec, node_id: str, data_dir: str, secret: bytes,
                 opts: NodeOptions, joining: NodeSpec | None = None) -> None:
        calls.append({"spec": spec, "node_id": node_id, "data_dir": data_dir,
                      "secret": secret, "joining": joining})

    monkeypatch.setattr(api.server, "run_node", run_node)
    return calls


def run_main(args: list[str]) -> Any:
    return CliRunner().invoke(main, args, env={"RAFTMEM_SECRET": None},
                              catch_exceptions=False)


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "cluster.secret"
    path.write_bytes(FAKE_SECRET + b"\n")
    return str(path)


def _join_args(addr: str, data_dir: Path, node_id: str = "n4") -> tuple[list[str], NodeSpec]:
    me = NodeSpec(node_id, _free_addr(), _free_addr())
    return ["node", "--join", f"http://{addr}", "--id", me.id, "--api", me.api,
            "--raft", me.raft, "--data-dir", str(data_dir)], me


def test_join_registers_saves_and_serves(
    server: tuple[str, FakeMemoryService], started: list[dict[str, Any]], secret_file: str,
    tmp_path: Path,
) -> None:
    addr, fake = server
    fake.registry["fake-1"]["api"] = addr  # the fake is the placement driver's node
    args, me = _join_args(addr, tmp_path / "n4")
    res = run_main([*args, "--secret-file", secret_file])
    assert res.exit_code == 0, res.output
    [call] = started
    assert call["node_id"] == "n4" and call["joining"] == me
    assert call["spec"].cluster_id == "fake" and call["secret"] == FAKE_SECRET
    assert call["data_dir"] == str(tmp_path / "n4")
    saved = orjson.loads((tmp_path / "n4" / "join.json").read_bytes())
    assert saved == {"spec": call["spec"].to_dict(), "me": me.to_dict()}
    assert fake.registry["n4"] == {**me.to_dict(), "state": "up",
                                   "joined_at": fake.registry["n4"]["joined_at"]}
    assert [c[1][0] for c in fake.calls if c[0] == "pd.handle"] == ["describe", "register"]

    # a restart: only the data dir; nothing is asked of the cluster
    fake.calls.clear()
    res = run_main(["node", "--data-dir", str(tmp_path / "n4"), "--secret-file", secret_file])
    assert res.exit_code == 0, res.output
    assert started[1] == {**call}
    assert fake.calls == []


def test_join_finds_the_placement_driver_leader_after_503s(
    server: tuple[str, FakeMemoryService], started: list[dict[str, Any]], secret_file: str,
    tmp_path: Path,
) -> None:
    addr, fake = server
    fake.registry["fake-1"]["api"] = addr
    fake.pd.unavailable = 2
    args, me = _join_args(addr, tmp_path / "n4")
    res = run_main([*args, "--secret-file", secret_file])
    assert res.exit_code == 0, res.output
    assert [c[1][0] for c in fake.calls if c[0] == "pd.handle"] == [
        "describe", "register", "register", "register"]
    assert started[0]["joining"] == me


def test_join_uses_the_secret_beside_raftmem_up_s_cluster_json(
    server: tuple[str, FakeMemoryService], started: list[dict[str, Any]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    addr, fake = server
    fake.registry["fake-1"]["api"] = addr
    monkeypatch.chdir(tmp_path)  # where `raftmem up` made ./raftmem-data
    (tmp_path / "raftmem-data").mkdir()
    (tmp_path / "raftmem-data" / "cluster.secret").write_bytes(FAKE_SECRET)
    args, _ = _join_args(addr, Path("raftmem-data/n4"))
    res = run_main(args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "raftmem-data" / "n4" / "join.json").exists()
    assert started[0]["secret"] == FAKE_SECRET


def test_join_with_a_wrong_secret_is_a_clear_error(
    server: tuple[str, FakeMemoryService], started: list[dict[str, Any]], tmp_path: Path,
) -> None:
    addr, fake = server
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("not-the-cluster-secret")
    args, _ = _join_args(addr, tmp_path / "n4")
    res = run_main([*args, "--secret-file", str(wrong)])
    assert res.exit_code == 1
    assert "refused this node's internal credential (HTTP 403)" in res.output
    assert str(wrong) in res.output
    assert started == [] and not (tmp_path / "n4" / "join.json").exists()
    assert fake.calls == []


def test_join_with_a_taken_id_is_a_clear_error(
    server: tuple[str, FakeMemoryService], started: list[dict[str, Any]], secret_file: str,
    tmp_path: Path,
) -> None:
    addr, fake = server
    asyncio.run(fake.add_node("n4", "127.0.0.1:7004", "127.0.0.1:7104"))
    args, _ = _join_args(addr, tmp_path / "n4")  # n4 again, on other addresses
    res = run_main([*args, "--secret-file", secret_file])
    assert res.exit_code == 1
    assert "node id n4 is taken or its addresses are in use" in res.output
    assert "registered with other addresses" in res.output
    args, _ = _join_args(addr, tmp_path / "f1", node_id="fake-1")
    res = run_main([*args, "--secret-file", secret_file])
    assert res.exit_code == 1 and "node id fake-1 is taken" in res.output
    assert "remove it first" in res.output
    assert started == []


def test_a_removed_node_of_the_description_joins_again_under_its_id(
    server: tuple[str, FakeMemoryService], started: list[dict[str, Any]], secret_file: str,
    tmp_path: Path,
) -> None:
    """Track record #12: once drained and removed, a node of cluster.json comes back
    under its own id with an empty data directory (it hosts nothing until given)."""
    addr, fake = server
    fake.registry["fake-1"]["state"] = "removed"
    fake.holding["fake-1"] = []
    args, _ = _join_args(addr, tmp_path / "f1", node_id="fake-1")
    res = run_main([*args, "--secret-file", secret_file])
    assert res.exit_code == 0, res.output
    assert fake.registry["fake-1"]["state"] == "up"
    assert started and started[-1]["joining"].id == "fake-1"


def test_join_to_an_unreachable_url_is_a_clear_error(
    started: list[dict[str, Any]], secret_file: str, tmp_path: Path
) -> None:
    dead = _free_addr()  # nothing listens there
    args, _ = _join_args(dead, tmp_path / "n4")
    res = run_main([*args, "--secret-file", secret_file])
    assert res.exit_code == 1 and f"cannot reach http://{dead}" in res.output
    assert started == []


@pytest.mark.parametrize("args,message", [
    (["node", "--join", "http://127.0.0.1:7001", "--id", "n4", "--raft", "127.0.0.1:7104"],
     "--join needs --api"),
    (["node", "--join", "http://127.0.0.1:7001", "--id", "n 4", "--api", "127.0.0.1:7004",
      "--raft", "127.0.0.1:7104"], "Invalid value for --id"),
    (["node", "--join", "http://127.0.0.1:7001", "--id", "n4", "--api", "127.0.0.1",
      "--raft", "127.0.0.1:7104"], "Invalid value for --api"),
    (["node", "--join", "http://127.0.0.1:7001", "--cluster", "{cluster}", "--id", "n4",
      "--api", "127.0.0.1:7004", "--raft", "127.0.0.1:7104"], "exclude each other"),
    (["node", "--data-dir", "{tmp}"], "join.json does not exist"),
    (["node"], "give --cluster FILE --id ID"),
    (["node", "--cluster", "{cluster}", "--id", "n1", "--api", "127.0.0.1:7004"],
     "--api and --raft are for --join"),
])
def test_node_usage_errors(
    started: list[dict[str, Any]], tmp_path: Path, args: list[str], message: str
) -> None:
    cluster = tmp_path / "cluster.json"
    cluster.write_bytes(orjson.dumps(FAKE_SPEC))
    args = [a.format(cluster=cluster, tmp=tmp_path) for a in args]
    res = run_main(args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert started == []


def test_missing_token_and_unreachable_node_are_clear_errors(
    server: tuple[str, FakeMemoryService]
) -> None:
    addr, _ = server
    res = run(["ranges", "--node", addr], token=None)
    assert res.exit_code == 1
    assert "HTTP 401 unauthorized" in res.output and "RAFTMEM_ADMIN_TOKEN" in res.output
    res = run(["ranges", "--node", "127.0.0.1:1", "--timeout", "2"])
    assert res.exit_code == 1 and "cannot reach http://127.0.0.1:1" in res.output


def test_format_table() -> None:
    assert format_table(["A", "LONG"], [[1, None], ["xyz", "b"]]).splitlines() == [
        "A    LONG", "1    -", "xyz  b"]
