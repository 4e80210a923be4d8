"""The benchmark suite's result formatting: tables, ratios vs etcd, targets, profile summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# bench/ is not an installed package: make the repository importable under plain `pytest` too
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import profiling, report


def _row(system: str, workload: str, c: int, ops: float, p99: float, tier: str | None = None,
         label: str | None = None, **kw: Any) -> dict[str, Any]:
    base = {"system": system, "workload": workload, "tier": tier, "label": label or workload,
            "concurrency": c, "ops_per_s": ops, "items_per_s": ops, "p50_ms": p99 / 3,
            "p95_ms": p99 / 2, "p99_ms": p99, "errors": {}, "error_count": 0,
            "client_cpu_pct": [40.0], "server_cpu_pct": {"n1": 90.0}, "rss_mb": {"n1": 120.0},
            "load1": 0.8, "nodes": 3, "memories": 100_000}
    base.update(kw)
    return base


def _load(frm: int, to: int, rate: float) -> dict[str, Any]:
    return {"nodes": 3, "from": frm, "to": to, "memories_per_s": rate,
            "seconds": (to - frm) / rate, "batch": 1000, "concurrency": 4, "p50_batch_ms": 120.0,
            "retries": {}, "load1": 0.9}


def _results() -> dict[str, Any]:
    rows = [
        _row("raftmem", "write", 64, 1200, 80),
        _row("raftmem", "get", 1, 900, 2.0, tier="linearizable"),
        _row("raftmem", "get", 16, 3000, 9.0, tier="linearizable"),
        _row("raftmem", "get", 16, 5000, 4.0, tier="eventual"),
        _row("raftmem", "search", 1, 40, 45.0, tier="linearizable"),
        _row("raftmem", "search", 16, 60, 400.0, tier="linearizable"),
        _row("raftmem", "search_agent", 1, 300, 12.0, tier="linearizable"),
        _row("etcd", "etcd_put", 64, 1000, 90, nodes=3, memories=None),
        _row("etcd", "etcd_get_lin", 1, 1000, 2.0, tier="linearizable", memories=None),
        _row("etcd", "etcd_get_lin", 16, 2500, 9.0, tier="linearizable", memories=None),
        _row("etcd", "etcd_get_ser", 16, 4000, 5.0, tier="serializable", memories=None),
    ]
    return {"rows": rows, "primary_nodes": 3, "main_memories": 100_000,
            "reference": [{"memories": 100_000, "filtered": False, "ops_per_s": 100.0,
                           "p50_ms": 9.0, "p99_ms": 11.0, "label": "numpy brute force"}],
            "loads": [_load(0, 10_000, 30_000.0), _load(10_000, 100_000, 15_000.0)],
            "exactness": [{"memories": 100_000, "nodes": 3, "filtered": False, "checked": 20,
                           "exact": 20}],
            "meta": {"suite": {"name": "test", "seconds": 5, "warmup": 1}, "client_procs": 2,
                     "machine": {"cores": 2}, "load_start": [0.5], "load_end": [0.7]}}


def test_number_formats() -> None:
    assert report.fmt_num(12345.6) == "12,346"
    assert report.fmt_num(3.21) == "3.2"
    assert report.fmt_num(None) == "–"
    assert report.fmt_ms(1.234) == "1.23"
    assert report.fmt_ms(12.34) == "12.3"
    assert report.fmt_ms(1234.5) == "1,234"
    assert report.fmt_ms(float("nan")) == "–"
    assert report.fmt_ratio(1.234) == "1.23×"
    assert report.fmt_ratio(None) == "–"
    assert report.fmt_bytes(512) == "512 B"
    assert report.fmt_bytes(3 * 2**20) == "3.0 MiB"
    assert report.fmt_errors({"a": 1, "b": 5}) == "b×5, a×1"
    assert report.fmt_errors({}) == "0"
    assert report.fmt_per_process({"n1": 50.4, "n2": 7.6}) == "n1 50 · n2 8"
    assert report.fmt_per_process([50.0, 20.0]) == "50 + 20"


def test_table_shape() -> None:
    t = report.table(["a", "b"], [["1", "2"], ["3", "4"]])
    assert t.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]


def test_rows_table_has_one_line_per_row_and_batch_shows_memories() -> None:
    rows = [_row("raftmem", "write", 1, 100, 5.0, label="write one memory"),
            _row("raftmem", "batch", 16, 20, 800.0, label="batch insert", items_per_s=2000)]
    lines = report.rows_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| write one memory | 1 | 100 | 1.67 | 2.50 | 5.00 | 0 | 40 |")
    assert "2,000 mem/s (20 req/s)" in lines[3]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


def test_ratios_pair_raftmem_with_etcd_at_the_same_concurrency() -> None:
    rs = report.ratios(_results()["rows"], nodes=3, memories=100_000)
    got = {(r["what"].split(" /")[0], r["concurrency"]): round(r["ratio"], 3) for r in rs}
    assert got == {("write one memory", 64): 1.2, ("get linearizable", 1): 0.9,
                   ("get linearizable", 16): 1.2, ("get eventual", 16): 1.25}
    assert "| write one memory / etcd put 1 KB | 64 | 1,200 | 1,000 | 1.20× |" in (
        report.ratios_table(rs))


def test_targets_are_judged_honestly() -> None:
    ts = {t["target"]: t for t in report.targets(_results())}
    assert ts["writes at c64 ≥ 1.0× etcd puts"]["met"] is True
    lin = ts["linearizable gets ≥ 1.0× etcd linearizable gets"]
    assert lin["met"] is False and lin["measured"] == "c1 0.90×, c16 1.20×"
    assert ts["eventual gets ≥ 1.0× etcd serializable gets"]["met"] is True
    assert ts["search k=10 over 100,000: p99 ≤ 50 ms at c1"]["met"] is True
    assert ts["search throughput at c16 ≥ 0.5× numpy brute force"]["met"] is True
    assert ts["agent-filtered search p99 ≤ 10 ms (c1)"]["met"] is False
    bulk = ts["bulk load ≥ 20,000 memories/s (batch endpoint)"]
    assert bulk["met"] is False and "10,000→100,000" in bulk["measured"]  # the largest load
    assert ts["exact search results (vs numpy)"]["met"] is True


def test_targets_without_etcd_say_not_measured() -> None:
    res = _results()
    res["rows"] = [r for r in res["rows"] if r["system"] != "etcd"]
    ts = {t["target"]: t for t in report.targets(res)}
    assert ts["writes at c64 ≥ 1.0× etcd puts"]["met"] is None
    assert "not measured" in report.targets_table(report.targets(res))


def test_render_has_every_section() -> None:
    md = report.render(_results())
    for heading in ("## Targets", "## raftmem (3 nodes, 100,000 memories)", "## etcd",
                    "## raftmem / etcd", "## Search vs numpy brute force", "## Scaling",
                    "## Bulk loads", "## Storage"):
        assert heading in md


COLLAPSED = """\
thread (0x1): MainThread;run (asyncio/runners.py:1);_run_once (asyncio/base_events.py:2);\
handle (api/app.py:3);parse_json (api/validation.py:4) 30
thread (0x1): MainThread;run (asyncio/runners.py:1);EpollSelector.select (selectors.py:5) 20
thread (0x2): raft;GroupHost._run (raftmem/shardgroups/host.py:6);\
StateMachine.apply (raftmem/statemachine/machine.py:7) 40
thread (0x3): read_0;_worker (concurrent/futures/thread.py:81) 10
garbage line
"""


def test_profile_summary() -> None:
    s = profiling.summarize(COLLAPSED.splitlines())
    assert s["samples"] == 100
    assert s["threads"] == {"raft thread": 40.0, "event loop (HTTP, service)": 50.0,
                            "read pool": 10.0}
    assert s["waiting"] == 30.0  # select + idle pool worker
    assert s["self"][0] == ("[raft thread] StateMachine.apply (statemachine/machine.py)", 40.0)
    assert ("handle (api/app.py)", 30.0) in s["inclusive"]
    assert all("selectors" not in name for name, _ in s["self"])
    assert "| raft thread | 40.0 |" in profiling.format_summary("t", s)
    assert profiling.summarize([])["samples"] == 0
