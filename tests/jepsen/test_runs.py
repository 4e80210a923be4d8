"""End to end: `python -m jepsen_like run` against real node processes.

The runs use the loopback addresses from ``$JEPSEN_ADDRESS_BASE`` (default
127.0.0.31, so a test run never collides with a manual run or a campaign on
the harness's default 127.0.0.11..13; each base has its own iptables chain).

Two runs that keep the harness honest:

* a short smoke run under partitions and kills must be linearizable;
* the same harness must catch a real bug: nodes started with the test-only
  ``--unsafe-local-reads`` (reads skip the read barrier and serve local,
  possibly stale, state) must make a partition run report ``false``.

Why the second is reliable, not lucky: every written value is unique, so a read
that returns an overwritten value is a violation whenever the overwrite had
completed before the read began. Clients are bound to every node, and the
schedule isolates one node for 8 s at a time: the clients on that node keep
reading its frozen state while writes through the majority keep succeeding. A
1 s client timeout turns their own stuck writes into `info` quickly, so they
get back to reading: each isolation yields about ten reads on the isolated
node, most of them provably stale (a write that began after the value read was
written had completed before the read began). Even between faults, followers
apply a committed entry after the leader answered the write, so stale reads
from followers show up within seconds too. The test still allows three
attempts (different seeds) so one pathological scheduling hiccup cannot fail it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
ADDRESS_BASE = os.environ.get("JEPSEN_ADDRESS_BASE", "127.0.0.31")


def run_cli(store: Path, *args: str, timeout: float = 200) -> tuple[int, dict[str, Any], Path]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT), env.get("PYTHONPATH", "")) if x)
    before = set(store.iterdir()) if store.exists() else set()
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "jepsen_like", "run", "--store", str(store)),
            *("--no-progress", "--address-base", ADDRESS_BASE, *args),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    new = sorted(set(store.iterdir()) - before)
    assert len(new) == 1, f"expected one run directory\n{proc.stdout}\n{proc.stderr}"
    run_dir = new[0]
    results = orjson.loads((run_dir / "results.json").read_bytes())
    assert results["exit_code"] == proc.returncode, proc.stderr
    return proc.returncode, results, run_dir


def describe(results: dict[str, Any]) -> str:
    return orjson.dumps(
        {k: results.get(k) for k in ("valid", "checkers", "counts", "errors")},
        option=orjson.OPT_INDENT_2,
    ).decode()


def test_smoke_run_under_partitions_and_kills_is_linearizable(tmp_path: Path) -> None:
    smoke = (
        "--workload register --nemesis partition,kill --time 30 --seed 11 "
        "--fault-time 4,6 --healthy-time 3,5 --partition-modes isolate,leader,halves"
    )
    code, results, run_dir = run_cli(tmp_path, *smoke.split())
    assert code == 0, describe(results)
    assert results["valid"] is True
    assert results["checkers"]["linearizable"]["valid"] is True
    assert results["checkers"]["final-reads"]["valid"] is True
    faults = results["nemesis"]["timeline"]
    assert {f["nemesis"] for f in faults} == {"partition", "kill"}, faults
    assert all("error" not in f for f in faults), faults
    assert results["counts"]["chaos"]["total"]["ok"] > 200
    for name in ("history.json", "results.json", "timeline.html"):
        assert (run_dir / name).stat().st_size > 0
    assert (run_dir / "nodes" / "n1" / "node.log").stat().st_size > 0
    # the iptables chain, if one was used, is gone
    if results["nemesis"]["setup"]["partition"]["via"] == "iptables":
        listing = subprocess.run(
            ["iptables", "-w", "-S"], capture_output=True, text=True, check=False
        ).stdout
        chain = results["nemesis"]["setup"]["partition"]["chain"]
        assert chain not in listing.split()


def test_unsafe_local_reads_are_caught_as_not_linearizable(tmp_path: Path) -> None:
    attempts = []
    buggy = (
        "--workload register --nemesis partition --time 20 --partition-modes isolate "
        "--fault-time 8,8 --healthy-time 3,3 --op-timeout 1 --node-arg=--unsafe-local-reads"
    )
    for seed in (21, 22, 23):
        code, results, _ = run_cli(tmp_path, "--seed", str(seed), *buggy.split())
        attempts.append(results)
        if results["checkers"]["linearizable"]["valid"] is False:
            assert code == 1
            assert results["valid"] is False
            violation = results["checkers"]["linearizable"]
            assert violation["key"] is not None and violation["window"]
            return
    raise AssertionError(
        "no violation found in 3 runs:\n" + "\n".join(describe(r) for r in attempts)
    )


def _placement_run(tmp_path: Path, nemesis: str, seed: int) -> dict[str, Any]:
    """A short kv run under a placement nemesis; its results (checked to pass)."""
    short = (
        f"--workload kv --nemesis {nemesis} --time 30 --seed {seed} --concurrency 4 "
        "--fault-time 3,5 --healthy-time 2,3 --placement-timeout 25"
    )
    code, results, run_dir = run_cli(tmp_path, *short.split())
    assert code == 0, describe(results)
    assert results["checkers"]["linearizable"]["valid"] is True
    assert results["checkers"]["final-reads"]["valid"] is True
    assert results["errors"] == [], results["errors"]
    faults = results["nemesis"]["timeline"]
    assert faults and all("error" not in f for f in faults), faults
    # The last heal left no drain behind, and every node that runs is up.
    last = results["nemesis"]["timeline"][-1]["heal"]["registry"]
    assert "draining" not in last.values(), last
    running = [n["id"] for n in results["nodes"].values() if n["running_at_end"]]
    assert all(last.get(rid) == "up" for rid in running), (running, last)
    assert (run_dir / "nodes" / "placement.json").stat().st_size > 0
    return dict(results)


def test_membership_run_nodes_join_drain_and_come_back_linearizably(tmp_path: Path) -> None:
    # seed 5: join n4, drain, re-add, drain, re-add (the schedule is the seed's)
    results = _placement_run(tmp_path, "membership", 5)
    summary = results["nemesis"]["summary"]["membership"]
    assert summary.get("joins") == 1, summary
    assert summary.get("drains_started", 0) >= 1, summary
    actions = [f["inject"]["action"] for f in results["nemesis"]["timeline"]]
    assert actions[:2] == ["join", "drain"], actions
    ops = [
        o
        for o in orjson.loads((tmp_path / results["name"] / "history.json").read_bytes())["ops"]
        if o["type"] == "ok" and not o.get("final")
    ]
    # n4 served clients once it had joined
    assert any(o.get("node") == "n4" for o in ops)


def test_rebalance_run_leaders_and_replicas_move_linearizably(tmp_path: Path) -> None:
    # seed 6: a leadership transfer, two range moves between groups, then drains
    # that are re-registered (as many as the 30 s allow)
    results = _placement_run(tmp_path, "rebalance", 6)
    setup = results["nemesis"]["setup"]["rebalance"]
    assert setup["joined"][0]["outcome"] == "up" and setup["registry"]["n4"]["state"] == "up"
    summary = results["nemesis"]["summary"]["rebalance"]
    attempted = summary.get("transfers", 0) + summary.get("transfer_timeouts", 0)
    assert attempted + summary.get("transfers_not_started", 0) >= 1, summary
    assert summary.get("drains_started", 0) >= 1, summary
    assert summary.get("range_moves", 0) >= 1, summary
