"""History recording, the ok/fail/info table, statistics and the timeline page."""

from __future__ import annotations

import argparse
import itertools
import random
import re
import xml.etree.ElementTree as ET

import pytest

from jepsen_like.checker.check import check_history
from jepsen_like.checker.history import parse_history
from jepsen_like.harness import report, timeline
from jepsen_like.harness.api import Reply, outcome
from jepsen_like.harness.cli import add_run_parser, config_from_args
from jepsen_like.harness.recorder import Recorder
from jepsen_like.harness.runner import combine, exit_code_for
from jepsen_like.workloads import build


def fake_clock(step: int = 10) -> itertools.count[int]:
    return itertools.count(1000, step)


def recorder() -> Recorder:
    c = fake_clock()
    return Recorder(clock=lambda: next(c))


# --------------------------------------------------------------------------- recorder


def test_events_are_recorded_in_order_with_increasing_times() -> None:
    rec = recorder()
    a = rec.invoke(0, "write", "k", 1, node="n1")
    b = rec.invoke(1, "read", "k", None, node="n2")
    rec.complete(a, "ok", 1, node="n1")
    rec.complete(b, "ok", 1, node="n2")
    assert [(e["id"], e["type"]) for e in rec.events] == [
        (a, "invoke"),
        (b, "invoke"),
        (a, "ok"),
        (b, "ok"),
    ]
    times = [e["time"] for e in rec.events]
    assert times == sorted(times) and times[0] >= 0
    assert rec.events[2]["latency_ns"] == times[2] - times[0]
    assert rec.events[0]["node"] == "n1"


def test_a_process_has_one_open_operation() -> None:
    rec = recorder()
    rec.invoke(0, "read", "k", None)
    with pytest.raises(ValueError, match="process 0"):
        rec.invoke(0, "read", "k", None)


def test_open_operations_are_closed_with_synthetic_infos() -> None:
    rec = recorder()
    rec.invoke(0, "write", "k", 5)
    rec.invoke(1, "read", "k", None)
    assert rec.close_open() == 2
    last = rec.events[-2:]
    assert [e["type"] for e in last] == ["info", "info"]
    assert all(e["synthetic"] for e in last)
    assert rec.open_ops == 0


def test_the_document_is_a_valid_format_1_history() -> None:
    rec = recorder()
    w = rec.invoke(0, "write", "k", 1)
    rec.complete(w, "ok", 1)
    r = rec.invoke(1, "read", "k", None)
    rec.complete(r, "ok", 1)
    c = rec.invoke(2, "cas", "k", [1, 2])
    rec.complete(c, "info", [1, 2], error="timeout")
    doc = rec.document("t", "kv", None, nemesis=[], phases={})
    history = parse_history(doc)
    assert [op.type for op in history.operations] == ["ok", "ok", "info"]
    assert check_history(history, timeout=5).linearizable is True


def test_a_stale_read_recorded_by_the_recorder_is_caught() -> None:
    rec = recorder()
    for v in (1, 2):
        w = rec.invoke(0, "write", "k", v)
        rec.complete(w, "ok", v)
    r = rec.invoke(1, "read", "k", None)
    rec.complete(r, "ok", 1)
    result = check_history(parse_history(rec.document("t", "kv")), timeout=5)
    assert result.linearizable is False


# --------------------------------------------------------------------------- ok / fail / info


def err(code: str, definite: bool) -> dict[str, object]:
    return {"error": {"code": code, "message": code, "definite": definite}}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(200, {"id": "k"}), "ok"),
        (Reply(201, {"id": "k"}), "ok"),
        (Reply(409, err("version_mismatch", True)), "fail"),
        (Reply(404, err("not_found", True)), "fail"),
        (Reply(400, err("invalid_request", True)), "fail"),
        (Reply(503, err("no_leader", True)), "fail"),
        (Reply(503, err("epoch_mismatch", True)), "fail"),
        (Reply(504, err("commit_timeout", False)), "info"),
        (Reply(500, err("internal", False)), "info"),
        (Reply(502, None), "info"),
        (Reply(400, None), "fail"),
        (Reply(None, error="timeout"), "info"),
        (Reply(None, error="server disconnected"), "info"),
        (Reply(None, error="connect: refused", connected=False), "fail"),
    ],
)
def test_outcome_table(reply: Reply, expected: str) -> None:
    assert outcome(reply) == expected


def test_verdicts_combine_false_over_unknown_over_true() -> None:
    assert combine([True, True]) is True
    assert combine([True, "unknown"]) == "unknown"
    assert combine(["unknown", False]) is False
    assert [exit_code_for(v) for v in (True, False, "unknown")] == [0, 1, 2]


# --------------------------------------------------------------------------- generator


def test_written_values_are_unique_and_cas_expects_what_was_seen() -> None:
    w = build("register", 2)
    rng = random.Random(0)
    seen = {"r0": 7}
    ops = [w.generator.next_op(rng, seen) for _ in range(500)]
    written = [o.value for o in ops if o.f == "write"] + [o.value[1] for o in ops if o.f == "cas"]
    assert len(written) == len(set(written))
    assert {o.f for o in ops} == {"read", "write", "cas"}
    assert all(o.key == "r0" and o.value[0] == 7 for o in ops if o.f == "cas")
    assert {o.key for o in ops} == {"r0", "r1"}


def test_workload_models() -> None:
    assert build("register", 1).model == "cas-register"
    assert build("register", 1).history_key("r0") is None
    assert build("register", None).model == "kv"
    kv = build("kv", None)
    assert (kv.model, len(kv.keys), kv.precreate) == ("kv", 64, False)
    assert kv.history_key("k3") == "k3"


# --------------------------------------------------------------------------- statistics


def test_percentiles_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert report.percentile(values, 50) == 50
    assert report.percentile(values, 99) == 99
    assert report.percentile(values, 100) == 100
    assert report.percentile([3.0], 90) == 3.0


def test_counts_and_latencies_split_chaos_and_final() -> None:
    rec = recorder()
    for i, kind in enumerate(["ok", "fail", "info"]):
        op = rec.invoke(i, "write", "k", i)
        rec.complete(op, kind, i)
    op = rec.invoke(9, "read", "k", None, final=True)
    rec.complete(op, "ok", None, final=True)
    counts = report.counts(rec.events)
    assert counts["chaos"]["write"] == {"ok": 1, "fail": 1, "info": 1}
    assert counts["final"]["read"] == {"ok": 1, "fail": 0, "info": 0}
    lat = report.latencies(rec.events)
    assert lat["ok_by_f"]["write"]["n"] == 1
    assert set(lat["by_type"]) == {"ok", "fail", "info"}


def test_final_reads_verdict() -> None:
    good = {"k": {"n1": {"ok": True, "value": 3}, "n2": {"ok": True, "value": 3}}}
    assert report.final_reads_verdict(good, ["k"], ["n1", "n2"])["valid"] is True
    missing = {"k": {"n1": {"ok": True, "value": 3}, "n2": {"ok": False}}}
    v = report.final_reads_verdict(missing, ["k"], ["n1", "n2"])
    assert v["valid"] is False and v["unread"] == [["k", "n2"]]
    assert report.final_reads_verdict({}, ["k"], ["n1"])["valid"] == "unknown"


# --------------------------------------------------------------------------- timeline


def test_timeline_is_self_contained_and_well_formed() -> None:
    rec = recorder()
    for i in range(50):
        op = rec.invoke(i % 4, "write", "k", i)
        rec.complete(op, ["ok", "fail", "info"][i % 3], i, node="n1")
    history = rec.document("t", "kv")
    results = {
        "name": "t<&>",
        "valid": False,
        "replay": "python -m jepsen_like run --seed 1",
        "config": {"concurrency": 4},
        "checkers": {"linearizable": {"valid": False, "key": "k", "op": 3, "window": [3, 4]}},
        "counts": report.counts(rec.events),
        "latency_ms": report.latencies(rec.events),
        "phases_ns": {"chaos": [0, 200], "heal": [200, 300]},
        "nemesis": {
            "timeline": [
                {
                    "nemesis": "partition",
                    "start_ns": 100,
                    "end_ns": 300,
                    "inject": {"mode": "isolate", "components": [["n1", "n2"], ["n3"]]},
                }
            ]
        },
    }
    page = timeline.render(history, results)
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    assert "t&lt;&amp;&gt;" in page
    svgs = re.findall(r"<svg.*?</svg>", page, re.DOTALL)
    assert len(svgs) == 3
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    assert "isolate n1,n2 | n3" in page


# --------------------------------------------------------------------------- command line


def test_run_options_become_a_config_and_a_replay_command() -> None:
    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers(dest="command"))
    argv = [
        "run",
        "--workload",
        "kv",
        "--nemesis",
        "partition,kill",
        "--time",
        "30",
        "--seed",
        "42",
        "--node-arg=--unsafe-local-reads",
        "--fault-time",
        "2,4",
        "--partition-modes",
        "isolate,leader",
        "--consistency",
        "lease",
    ]
    args = parser.parse_args(argv)
    cfg = config_from_args(args, argv)
    assert cfg.nemeses == ["partition", "kill"]
    assert cfg.node_args == ["--unsafe-local-reads"]
    assert cfg.fault_s == (2.0, 4.0)
    assert cfg.partition_modes == ("isolate", "leader")
    assert cfg.clients == 6
    replay = cfg.replay_command()
    assert "--seed 42" in replay and "--node-arg=--unsafe-local-reads" in replay
    again = config_from_args(parser.parse_args(replay.split()[3:]), [])
    assert (again.nemeses, again.seed, again.node_args, again.fault_s) == (
        cfg.nemeses,
        cfg.seed,
        cfg.node_args,
        cfg.fault_s,
    )


def test_placement_nemeses_parse_and_get_a_spare_slot() -> None:
    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", "--nemesis", "rebalance", "--placement-timeout", "90"])
    cfg = config_from_args(args, [])
    assert cfg.nemeses == ["rebalance"] and cfg.spares == 1
    assert cfg.placement_timeout_s == 90.0
    assert "--placement-timeout 90" in cfg.replay_command()
    assert config_from_args(parser.parse_args(["run", "--nemesis", "kill"]), []).spares == 0
    with pytest.raises(SystemExit):  # both would drive the same spare node
        parser.parse_args(["run", "--nemesis", "membership,rebalance"])
