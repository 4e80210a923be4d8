"""Where a node spends its time: py-spy on one node process, summarised.

``record`` runs ``py-spy record -p PID -f raw --threads --nonblocking`` for a
few seconds while a workload runs; ``summarize`` turns the collapsed stacks
into shares per thread kind, the hottest functions by self time and by
inclusive time. ``summarize`` is pure (tested on text).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")

# (label, marker in the stack) — first match wins, checked from the thread's root
THREAD_KINDS: list[tuple[str, str]] = [
    ("raft thread", "shardgroups/host.py"),
    ("read pool", "statemachine/reader.py"),
    ("event loop (HTTP, service)", "asyncio/base_events.py"),
    ("thread pools (fsync, other)", "concurrent/futures/thread.py"),
]


def py_spy() -> str | None:
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return shutil.which("py-spy") or (beside if os.path.exists(beside) else None)


def record(pid: int, seconds: int, out_path: str, rate: int = 100) -> subprocess.Popen[bytes]:
    """Start py-spy on ``pid`` (returns the process; wait for it)."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy not found: python -m pip install py-spy")
    cmd = [exe, "record", "-p", str(pid), "-f", "raw", "-d", str(seconds), "-r", str(rate),
           "--threads", "--nonblocking", "-o", out_path]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """``a;b;c 12`` lines → [(frames root first, count)]; malformed lines skipped."""
    out: list[tuple[list[str], int]] = []
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        out.append((stack.split(";"), int(count)))
    return out


def short(frame: str) -> str:
    """``fn (path/to/mod.py:12)`` → ``fn (to/mod.py)``: function and last two path parts."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    parts = m.group("file").replace("\\", "/").split("/")
    return f"{m.group('fn')} ({'/'.join(parts[-2:])})"


def thread_kind(frames: list[str]) -> str:
    joined = ";".join(frames)
    for label, marker in THREAD_KINDS:
        if marker in joined:
            return label
    return "other"


def summarize(lines: Iterable[str], top: int = 12) -> dict[str, Any]:
    """Shares per thread kind, hottest self frames and inclusive functions (in % of samples)."""
    stacks = parse_collapsed(lines)
    total = sum(c for _, c in stacks)
    if total == 0:
        return {"samples": 0, "threads": {}, "self": [], "inclusive": []}
    kinds: Counter[str] = Counter()
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, count in stacks:
        body = [f for f in frames if not f.startswith(("thread (", "process "))]
        kinds[thread_kind(body)] += count
        if body:
            self_t[short(body[-1])] += count
        for name in {short(f) for f in body}:
            incl[name] += count

    def pct(c: Counter[str], n: int | None = None) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in c.most_common(n)]

    return {"samples": total, "threads": dict(pct(kinds)), "self": pct(self_t, top),
            "inclusive": pct(incl, top)}


def format_summary(title: str, s: dict[str, Any]) -> str:
    lines = [f"### {title} ({s['samples']} samples)", "", "| thread | % of samples |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["threads"].items()]
    lines += ["", "| hottest (self) | % |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in s["self"]]
    lines += ["", "| hottest (inclusive) | % |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in s["inclusive"]]
    return "\n".join(lines) + "\n"
