"""timeline.html: one self-contained page per run (inline SVG and CSS, no scripts, no assets).

Three plots share one time axis (seconds since the chaos phase began), with
each fault shaded across all of them:

* operations: one lane per client, a bar from invocation to completion,
  coloured ok / fail / info; the ops of a violation's window are outlined;
* latency: every completion, log scale;
* throughput: completions per second by type.

Hovering a bar or point shows the operation (SVG <title>).
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import orjson

WIDTH = 1100
LEFT = 60
RIGHT = 20
MAX_MARKS = 25_000  # beyond this, ok operations are thinned (every non-ok one is kept)
COLORS = {"ok": "#2e7d32", "fail": "#e53935", "info": "#ffa000"}
NEMESIS_COLORS = {
    "partition": "#90caf9",
    "kill": "#ef9a9a",
    "pause": "#ce93d8",
    "membership": "#a5d6a7",
    "rebalance": "#ffcc80",
}


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


class Axis:
    def __init__(self, t_end_ns: int) -> None:
        self.t_end = max(t_end_ns, 1)

    def x(self, t_ns: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * t_ns / self.t_end

    def ticks(self, y0: float, y1: float) -> str:
        seconds = self.t_end / 1e9
        step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1e9) if seconds / s <= 12)
        out = []
        t = 0.0
        while t <= seconds:
            x = self.x(t * 1e9)
            out.append(
                f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" class="grid"/>'
                f'<text x="{x:.1f}" y="{y1 + 14}" class="tick" text-anchor="middle">'
                f"{t:g}s</text>"
            )
            t += step
        return "".join(out)


def pair_ops(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Invocation + completion → one record per operation."""
    invokes: dict[int, dict[str, Any]] = {}
    ops = []
    for e in events:
        if e["type"] == "invoke":
            invokes[e["id"]] = e
        else:
            inv = invokes.pop(e["id"], None)
            if inv is not None:
                ops.append(
                    {
                        "id": e["id"],
                        "process": e["process"],
                        "f": e["f"],
                        "key": e["key"],
                        "value": inv.get("value"),
                        "result": e.get("value"),
                        "type": e["type"],
                        "start": inv["time"],
                        "end": e["time"],
                        "node": e.get("node"),
                        "error": e.get("error"),
                        "final": bool(e.get("final")),
                        "synthetic": bool(e.get("synthetic")),
                    }
                )
    return ops


def _thin(ops: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    if len(ops) <= MAX_MARKS:
        return ops, False
    rest = [o for o in ops if o["type"] != "ok"]
    oks = [o for o in ops if o["type"] == "ok"]
    keep = max(1, MAX_MARKS - len(rest))
    step = max(1, math.ceil(len(oks) / keep))
    return rest + oks[::step], True


def _title(op: dict[str, Any]) -> str:
    key = "" if op["key"] is None else f" {op['key']}"
    shown = op["result"] if op["f"] == "read" else op["value"]
    lat = (op["end"] - op["start"]) / 1e6
    err = f" ({op['error']})" if op["error"] else ""
    return (
        f"#{op['id']} p{op['process']} {op['f']}{key} {shown!r} → {op['type']}{err}, "
        f"{lat:.1f} ms, node {op['node']}, t={op['start'] / 1e9:.3f}s"
    )


def _shading(axis: Axis, nemesis: list[dict[str, Any]], y0: float, y1: float, label: bool) -> str:
    out = []
    for n in nemesis:
        if "start_ns" not in n:
            continue
        x0 = axis.x(n["start_ns"])
        x1 = axis.x(n.get("end_ns", axis.t_end))
        color = NEMESIS_COLORS.get(n["nemesis"], "#bdbdbd")
        what = _esc(orjson.dumps(n.get("inject", {})).decode())
        if label:
            # Drawn over the operations: translucent, and transparent to the mouse
            # so that the operations' tooltips still show.
            out.append(
                f'<rect x="{x0:.1f}" y="{y0}" width="{max(1.0, x1 - x0):.1f}" '
                f'height="{y1 - y0}" fill="{color}" opacity="0.3" '
                'pointer-events="none"/>'
            )
        else:
            out.append(
                f'<rect x="{x0:.1f}" y="{y0}" width="{max(1.0, x1 - x0):.1f}" '
                f'height="{y1 - y0}" fill="{color}" opacity="0.35">'
                f"<title>{_esc(n['nemesis'])}: {what}</title></rect>"
            )
        if label:
            out.append(
                f'<text x="{x0 + 3:.1f}" y="{y0 - 3}" class="nem">{_esc(n["nemesis"])} '
                f"{_esc(describe_fault(n.get('inject', {})))}</text>"
            )
    return "".join(out)


def describe_fault(inject: dict[str, Any]) -> str:
    """A fault in a few characters: who was cut off, killed, paused, joined, drained, ..."""
    if "action" in inject:  # the placement nemeses
        if inject["action"] == "transfer" and "group" in inject:
            return f"transfer g{inject['group']} {inject.get('from')}->{inject.get('to', '?')}"
        who = inject.get("id") or inject.get("node") or ""
        return f"{inject['action']} {who}".strip()
    for key in ("killed", "paused"):
        if key in inject:
            return ",".join(inject[key])
    if inject.get("mode") == "bridge" and "leader" in inject:
        via = ",".join(inject.get("bridge") or [])
        return f"bridge {inject['leader']} x {inject.get('cut_from')} (via {via or '-'})"
    if "components" in inject:
        return f"{inject.get('mode', '')} " + " | ".join(",".join(c) for c in inject["components"])
    return ""


def _phase_lines(axis: Axis, phases: dict[str, list[int]], y0: float, y1: float) -> str:
    out = []
    shown = [
        (name, span) for name, span in phases.items() if name not in ("chaos", "done") and span
    ]
    for k, (name, span) in enumerate(shown):
        x = axis.x(span[0])
        y = y1 - 3 - 11 * (len(shown) - 1 - k)  # stacked: the phases after chaos are close
        out.append(
            f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" class="phase"/>'
            f'<text x="{x - 2:.1f}" y="{y}" class="tick" text-anchor="end">'
            f"{_esc(name)}</text>"
        )
    return "".join(out)


def ops_plot(
    ops: list[dict[str, Any]],
    axis: Axis,
    nemesis: list[dict[str, Any]],
    phases: dict[str, list[int]],
    clients: int,
    highlight: set[int],
) -> str:
    lanes: dict[int, int] = {}
    for o in sorted(ops, key=lambda o: o["start"]):
        lane = (o["process"] % clients) if clients and not o["final"] else None
        if lane is None:
            lane = lanes.setdefault(o["process"], clients + len(lanes))
        o["lane"] = lane
    n_lanes = max([o["lane"] for o in ops], default=0) + 1
    lane_h = max(4, min(14, 400 // max(1, n_lanes)))
    top, height = 24, n_lanes * lane_h
    shown, thinned = _thin(ops)
    marks = []
    for o in shown:
        x0, x1 = axis.x(o["start"]), axis.x(o["end"])
        y = top + o["lane"] * lane_h
        stroke = ' stroke="#000" stroke-width="1.5"' if o["id"] in highlight else ""
        marks.append(
            f'<rect x="{x0:.2f}" y="{y + 1}" width="{max(0.8, x1 - x0):.2f}" '
            f'height="{lane_h - 2}" fill="{COLORS[o["type"]]}"{stroke}>'
            f"<title>{_esc(_title(o))}</title></rect>"
        )
    h = top + height + 24
    note = " (ok operations thinned for drawing)" if thinned else ""
    return (
        f'<h2>Operations{note}</h2><svg width="{WIDTH}" height="{h}" '
        f'xmlns="http://www.w3.org/2000/svg">'
        + axis.ticks(top, top + height)
        + _phase_lines(axis, phases, top, top + height)
        + f'<text x="4" y="{top + 10}" class="tick">clients</text>'
        + f'<text x="4" y="{top + height - 2}" class="tick">final</text>'
        + "".join(marks)
        + _shading(axis, nemesis, top, top + height, True)
        + "</svg>"
    )


def latency_plot(ops: list[dict[str, Any]], axis: Axis, nemesis: list[dict[str, Any]]) -> str:
    top, height = 10, 240
    lats = [max(1e-3, (o["end"] - o["start"]) / 1e6) for o in ops if not o["synthetic"]]
    if not lats:
        return ""
    lo = 10 ** math.floor(math.log10(min(lats)))
    hi = 10 ** math.ceil(math.log10(max(lats) * 1.0001))
    span = max(1e-9, math.log10(hi) - math.log10(lo))

    def y(ms: float) -> float:
        return top + height - height * (math.log10(max(ms, lo)) - math.log10(lo)) / span

    shown, _ = _thin([o for o in ops if not o["synthetic"]])
    pts = []
    for o in shown:
        ms = max(1e-3, (o["end"] - o["start"]) / 1e6)
        pts.append(
            f'<circle cx="{axis.x(o["start"]):.1f}" cy="{y(ms):.1f}" r="1.6" '
            f'fill="{COLORS[o["type"]]}" opacity="0.7"><title>{_esc(_title(o))}'
            "</title></circle>"
        )
    grid = []
    decade = lo
    while decade <= hi:
        yy = y(decade)
        grid.append(
            f'<line x1="{LEFT}" y1="{yy:.1f}" x2="{WIDTH - RIGHT}" y2="{yy:.1f}" '
            f'class="grid"/><text x="{LEFT - 4}" y="{yy + 4:.1f}" class="tick" '
            f'text-anchor="end">{decade:g} ms</text>'
        )
        decade *= 10
    return (
        f'<h2>Latency (log scale)</h2><svg width="{WIDTH}" height="{top + height + 24}" '
        'xmlns="http://www.w3.org/2000/svg">'
        + _shading(axis, nemesis, top, top + height, False)
        + axis.ticks(top, top + height)
        + "".join(grid)
        + "".join(pts)
        + "</svg>"
    )


def throughput_plot(ops: list[dict[str, Any]], axis: Axis, nemesis: list[dict[str, Any]]) -> str:
    top, height = 10, 180
    bucket = 1e9 if axis.t_end > 5e9 else axis.t_end / 20
    n = int(axis.t_end // bucket) + 1
    series = {t: [0] * n for t in COLORS}
    for o in ops:
        series[o["type"]][min(n - 1, int(o["end"] // bucket))] += 1
    rate = 1e9 / bucket
    peak = max([max(s) for s in series.values()] + [1]) * rate

    def y(v: float) -> float:
        return top + height - height * v / peak

    lines = []
    for t, counts in series.items():
        pts = " ".join(
            f"{axis.x((i + 0.5) * bucket):.1f},{y(c * rate):.1f}" for i, c in enumerate(counts)
        )
        lines.append(
            f'<polyline points="{pts}" fill="none" stroke="{COLORS[t]}" '
            f'stroke-width="1.5"><title>{t} per second</title></polyline>'
        )
    labels = "".join(
        f'<text x="{LEFT - 4}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{v:g}</text>'
        f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{WIDTH - RIGHT}" y2="{y(v):.1f}" class="grid"/>'
        for v in _nice_ticks(peak)
    )
    return (
        f'<h2>Throughput (completions per second)</h2><svg width="{WIDTH}" '
        f'height="{top + height + 24}" xmlns="http://www.w3.org/2000/svg">'
        + _shading(axis, nemesis, top, top + height, False)
        + axis.ticks(top, top + height)
        + labels
        + "".join(lines)
        + "</svg>"
    )


def _nice_ticks(peak: float) -> list[float]:
    raw = peak / 4
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [step * i for i in range(int(peak // step) + 1)]


def _table(rows: list[list[Any]], head: list[str]) -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _outcome(entry: dict[str, Any]) -> str:
    """What a fault ended as: the placement nemeses' outcome of the inject, then the heal's."""
    parts = [
        str(entry[side]["outcome"])
        for side in ("inject", "heal")
        if isinstance(entry.get(side), dict) and entry[side].get("outcome")
    ]
    return " / ".join(parts)


def _verdict_class(v: Any) -> str:
    return "pass" if v is True else ("fail" if v is False else "unknown")


def render(history: dict[str, Any], results: dict[str, Any]) -> str:
    events = history.get("ops", [])
    ops = pair_ops(events)
    t_end = max([e["time"] for e in events] + [1])
    axis = Axis(t_end)
    nemesis = results.get("nemesis", {}).get("timeline", [])
    phases = results.get("phases_ns", {})
    clients = int(results.get("config", {}).get("concurrency") or 1)
    lin = results.get("checkers", {}).get("linearizable", {})
    highlight = set(lin.get("window") or [])
    if lin.get("op") is not None:
        highlight.add(lin["op"])
    for v in results.get("checkers", {}).get("session", {}).get("violations", [])[:1]:
        # The first session violation: the read and the op of the session it fell behind.
        highlight.update(v[side]["id"] for side in ("read", "floor", "op", "other") if side in v)

    checker_rows = [
        [
            name,
            c.get("valid"),
            c.get("reason", "")
            or (
                f"key {c.get('key')!r}, op {c.get('op')}, window {c.get('window')}"
                if c.get("valid") is False and "window" in c
                else ""
            ),
        ]
        for name, c in results.get("checkers", {}).items()
    ]
    count_rows = [
        [f, r["ok"], r["fail"], r["info"]]
        for f, r in results.get("counts", {}).get("chaos", {}).items()
    ]
    lat_rows = [
        [f, s.get("n"), s.get("p50"), s.get("p90"), s.get("p99"), s.get("max")]
        for f, s in results.get("latency_ms", {}).get("ok_by_f", {}).items()
    ]
    nem_rows = [
        [
            f"{n['start_ns'] / 1e9:.1f}s",
            f"{n.get('end_ns', t_end) / 1e9:.1f}s",
            n["nemesis"],
            orjson.dumps(n.get("inject", {})).decode()[:160],
            _outcome(n),
            n.get("recovered_s"),
            n.get("error", ""),
        ]
        for n in nemesis
        if "start_ns" in n
    ]
    valid = results.get("valid")
    violation_link = (
        '<p>The violation, operation by operation: <a href="violation.html">violation.html</a></p>'
        if lin.get("report")
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_esc(results.get("name", "run"))}</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }}
h1 {{ font-size: 18px; }} h2 {{ font-size: 14px; margin: 18px 0 4px; }}
table {{ border-collapse: collapse; margin: 6px 0; }}
td, th {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; font-size: 12px; }}
.verdict {{ font-weight: bold; padding: 2px 8px; border-radius: 3px; color: #fff; }}
.pass {{ background: #2e7d32; }} .fail {{ background: #c62828; }}
.unknown {{ background: #757575; }}
.grid {{ stroke: #eee; }} .phase {{ stroke: #555; stroke-dasharray: 4 3; }}
.tick {{ font-size: 10px; fill: #555; }} .nem {{ font-size: 10px; fill: #0d47a1; }}
code {{ background: #f4f4f4; padding: 1px 4px; }}
.legend span {{ display: inline-block; padding: 0 6px; margin-right: 6px; color: #fff; }}
</style></head><body>
<h1>{_esc(results.get("name", ""))} <span class="verdict {_verdict_class(valid)}">
valid: {_esc(valid)}</span></h1>
<p>Replay: <code>{_esc(results.get("replay", ""))}</code></p>
<div class="legend"><span style="background:{COLORS["ok"]}">ok</span>
<span style="background:{COLORS["fail"]}">fail</span>
<span style="background:{COLORS["info"]}">info</span>
{
        "".join(
            f'<span style="background:{c};color:#222">{n}</span>' for n, c in NEMESIS_COLORS.items()
        )
    }</div>
<h2>Checkers</h2>{_table(checker_rows, ["checker", "valid", "detail"])}{violation_link}
<h2>Operations (chaos phase)</h2>{_table(count_rows, ["f", "ok", "fail", "info"])}
<h2>Latency of ok operations (ms)</h2>
{_table(lat_rows, ["f", "n", "p50", "p90", "p99", "max"])}
<h2>Faults</h2>{
        _table(nem_rows, ["start", "end", "nemesis", "what", "outcome", "recovered (s)", "error"])
    }
{ops_plot(ops, axis, nemesis, phases, clients, highlight)}
{latency_plot(ops, axis, nemesis)}
{throughput_plot(ops, axis, nemesis)}
</body></html>
"""


def write(path: Path, history: dict[str, Any], results: dict[str, Any]) -> None:
    path.write_text(render(history, results), encoding="utf-8")
