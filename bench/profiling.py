"""Where a node spends its time: py-spy on one node process, summarised.

``record`` runs ``py-spy record -p PID -f raw --threads --nonblocking`` for a
few seconds while a workload runs; ``summarize`` turns the collapsed stacks
into shares per thread, the share spent waiting, the hottest frames by self
time and raftmem's functions by inclusive time. ``summarize`` is pure (tested
on text).
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

# py-spy --threads roots each stack in "thread (TID): NAME"; NAME → what the thread does
THREAD_NAMES: dict[str, str] = {
    "MainThread": "event loop (HTTP, service)",
    "raft": "raft thread",
    "read": "read pool",
    "fsync": "fsync pool",
    "checkpoint": "checkpoint",
    "snapshot": "snapshot",
}
# leaf functions that are a thread waiting, not working
WAITING = frozenset({"EpollSelector.select", "select", "Condition.wait", "Event.wait", "_worker",
                     "sleep", "Thread._wait_for_tstate_lock", "wait", "poll"})
# inclusive time is reported for functions of these packages only
OWN = ("raftmem/", "api/", "pysyncobj/", "aiohttp/", "apsw", "sqlite_vec")
# roots every stack of a thread shares: left out of the inclusive list
ROOTS = frozenset({"<module> (raftmem/__main__.py)", "node (raftmem/cli.py)",
                   "run_node (api/server.py)", "main (raftmem/cli.py)"})
_THREAD = re.compile(r"^thread \((?:0x)?[0-9A-Fa-f]+\)(?::\s*(?P<name>.*))?$")


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
    """What a stack's thread does, from its ``thread (TID): NAME`` root frame."""
    m = _THREAD.match(frames[0]) if frames else None
    name = (m.group("name") or "").strip() if m else ""
    base = re.sub(r"[-_](g?\d+)$", "", name)
    return THREAD_NAMES.get(base, base or "other")


def _function(frame: str) -> str:
    m = _FRAME.match(frame)
    return m.group("fn") if m else frame


def summarize(lines: Iterable[str], top: int = 12) -> dict[str, Any]:
    """Where the samples are, in % of all samples.

    ``threads``: per thread kind; ``waiting``: samples whose leaf is a wait
    (select, a condition, an idle pool worker); ``self``: the hottest leaf
    frames that are not waits; ``inclusive``: the functions of raftmem, its API
    and main libraries on the most stacks.
    """
    stacks = parse_collapsed(lines)
    total = sum(c for _, c in stacks)
    if total == 0:
        return {"samples": 0, "threads": {}, "waiting": 0.0, "self": [], "inclusive": []}
    kinds: Counter[str] = Counter()
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    waiting = 0
    for frames, count in stacks:
        kind = thread_kind(frames)
        body = [f for f in frames if not f.startswith(("thread (", "process "))]
        kinds[kind] += count
        if not body:
            continue
        if _function(body[-1]) in WAITING:
            waiting += count
        else:
            self_t[f"[{kind}] {short(body[-1])}"] += count
        for name in {short(f) for f in body if any(o in f for o in OWN)} - ROOTS:
            incl[name] += count

    def pct(c: Counter[str], n: int | None = None) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in c.most_common(n)]

    return {"samples": total, "threads": dict(pct(kinds)),
            "waiting": round(100.0 * waiting / total, 1), "self": pct(self_t, top),
            "inclusive": pct(incl, top)}


def format_summary(title: str, s: dict[str, Any]) -> str:
    lines = [f"### {title} ({s['samples']} samples, {s['waiting']}% waiting)", "",
             "| thread | % of samples |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["threads"].items()]
    lines += ["", "| hottest (self, waits excluded) | % |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in s["self"]]
    lines += ["", "| hottest (inclusive) | % |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in s["inclusive"]]
    return "\n".join(lines) + "\n"
