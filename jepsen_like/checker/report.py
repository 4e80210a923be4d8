"""A violation as a self-contained HTML page (inline CSS and SVG, no assets, no script).

Like Porcupine's visualization: the failing key's operations on a timeline, one
row per process, each a bar from its invocation to its completion (ok green,
fail grey, info orange and open-ended, since its window never closes). The
failing window is outlined in red on a shaded band; the operation that could
not be linearized is marked with a cross; operations of the longest
linearizable prefix carry their position in it (#1, #2, ...). Hovering a bar
shows the operation.
"""

from __future__ import annotations

import json
from html import escape

from jepsen_like.checker.check import CheckResult, Key, Violation, operations_on, takes_part
from jepsen_like.checker.history import History, Operation

# Past this many operations on the key, the timeline shows the neighbourhood of
# the window only (it says so).
_MAX_SHOWN = 150
_CONTEXT = 25  # operations shown before and after the window when cropping

_DX_FEW, _DX_MANY = 48, 22  # pixels per event, for up to 30 events and for more
_ROW = 30  # pixels per process row
_LEFT = 90  # the process labels' column
_TOP = 30
_BAR = 20

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
.verdict-false { color: #c62828; }
.verdict-true { color: #2e7d32; }
.verdict-unknown { color: #ef6c00; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
              font-size: 12px; }
.timeline { overflow-x: auto; border: 1px solid #ddd; padding: 4px; background: #fff; }
.legend span { display: inline-block; margin-right: 16px; }
.swatch { display: inline-block; width: 14px; height: 10px; border: 1px solid #555;
          vertical-align: middle; margin-right: 4px; }
tr.stuck td { background: #ffebee; font-weight: 600; }
tr.window td { background: #fff5f5; }
.note { color: #666; }
svg text { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px; }
"""

_FILL = {"ok": "#9bd8a4", "fail": "#d0d0d0", "info": "#ffc46b"}


def render_html(history: History, result: CheckResult) -> str:
    """The report page for `result`, a check of `history`."""
    verdict = "unknown" if result.linearizable == "unknown" else json.dumps(result.linearizable)
    title = f"{history.name}: linearizable = {verdict}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        (
            f'<h1>{escape(history.name)}: <span class="verdict-{verdict}">'
            f"linearizable = {verdict}</span></h1>"
        ),
        _summary(history, result),
    ]
    v = result.violation
    if v is None:
        if result.reason:
            parts.append(f"<p>{escape(result.reason)}</p>")
        else:
            parts.append("<p>No violation to show.</p>")
    else:
        by_id = {op.id: op for op in history.operations}
        parts.append(_explanation(v, by_id))
        parts.append(_timeline(history, v))
        parts.append(_window_table(v, by_id))
        parts.append(_prefix_list(v, by_id))
    parts.append("</body></html>")
    return "\n".join(parts)


def _key_text(key: Key) -> str:
    if isinstance(key, tuple):
        return ", ".join(key)
    return "(the register)" if key is None else key


def _summary(history: History, result: CheckResult) -> str:
    rows = [
        ("model", history.model),
        ("operations", str(len(history.operations))),
        ("checked in", f"{result.seconds:.3f} s"),
    ]
    if history.source:
        rows.append(("file", history.source))
    if history.expected_linearizable is not None:
        rows.append(("expected", json.dumps(history.expected_linearizable)))
    if result.failing_keys and history.model != "cas-register":
        rows.append(("failing keys", "; ".join(_key_text(k) for k in result.failing_keys)))
    if history.notes:
        rows.append(("notes", history.notes))
    cells = "".join(f"<tr><th>{escape(a)}</th><td>{escape(b)}</td></tr>" for a, b in rows)
    return f"<table>{cells}</table>"


def describe(op: Operation) -> str:
    """A one-line description of an operation, e.g. ``write 3`` or ``read -> 3``."""
    if op.f == "read":
        seen = json.dumps(op.result) if op.type == "ok" else "?"
        text = f"read -> {seen}"
    elif op.f == "cas":
        text = f"cas {json.dumps(op.value[0])} -> {json.dumps(op.value[1])}"
    elif op.f == "txn":
        mops = op.result if op.type == "ok" and op.result is not None else op.value
        text = "txn " + " ".join(
            f"{'r' if f == 'read' else 'w'}({k}){json.dumps(val)}" for f, k, val in mops
        )
    else:
        text = f"{op.f} {json.dumps(op.value)}"
    return text


def _short(op: Operation) -> str:
    text = describe(op)
    for long, brief in (("read -> ", "r "), ("write ", "w "), ("append ", "a ")):
        if text.startswith(long):
            return brief + text[len(long) :]
    return text


def _explanation(v: Violation, by_id: dict[int, Operation]) -> str:
    stuck = by_id[v.op]
    in_prefix = set(v.prefix)
    others = [i for i in v.window if i != v.op]
    pending = [i for i in others if i not in in_prefix]
    key = "" if v.key is None else f" on key <code>{escape(_key_text(v.key))}</code>"
    return (
        f"<p>Operation <b>{stuck.id}</b> (process {stuck.process}, "
        f"<code>{escape(describe(stuck))}</code>){key} could not be linearized by its "
        f"completion. It is concurrent with {len(others)} operation(s) "
        f"({escape(', '.join(map(str, others)) or 'none')}). The search got furthest "
        f"with a linearizable prefix of {len(v.prefix)} operation(s) leaving the state "
        f"<code>{escape(json.dumps(v.state))}</code>; from there no order of operation "
        f"{stuck.id} and the concurrent operations not yet linearized "
        f"({escape(', '.join(map(str, pending)) or 'none')}) is legal, and no other "
        "prefix got further.</p>"
    )


def _shown_ops(ops: list[Operation], v: Violation) -> tuple[list[Operation], bool]:
    if len(ops) <= _MAX_SHOWN:
        return ops, False
    window = set(v.window)
    idx = [n for n, op in enumerate(ops) if op.id in window]
    lo = max(0, idx[0] - _CONTEXT)
    hi = min(len(ops), idx[-1] + _CONTEXT + 1)
    shown = {op.id for op in ops[lo:hi]} | window
    return [op for op in ops if op.id in shown], True


def _timeline(history: History, v: Violation) -> str:
    ops, cropped = _shown_ops(operations_on(history, v.key), v)
    window = set(v.window)
    order = {op_id: n + 1 for n, op_id in enumerate(v.prefix)}
    positions = sorted({p for op in ops for p in (op.call, op.ret)})
    dx = _DX_FEW if len(positions) <= 30 else _DX_MANY
    x_of = {p: _LEFT + 10 + n * dx for n, p in enumerate(positions)}
    width = _LEFT + 10 + len(positions) * dx + 60
    processes = sorted({op.process for op in ops})
    y_of = {p: _TOP + n * _ROW for n, p in enumerate(processes)}
    height = _TOP + len(processes) * _ROW + 10
    svg = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of operations">'
        ),
        "<defs>",
        (
            '<linearGradient id="open" x1="0" x2="1" y1="0" y2="0">'
            f'<stop offset="0" stop-color="{_FILL["info"]}"/>'
            f'<stop offset="1" stop-color="{_FILL["info"]}" stop-opacity="0.1"/>'
            "</linearGradient>"
        ),
        "</defs>",
    ]
    members = [op for op in ops if op.id in window]
    if members:
        stuck = next((op for op in ops if op.id == v.op), None)
        x0 = min(x_of[op.call] for op in members) - 4
        x1 = (x_of[stuck.ret] if stuck else max(x_of[op.ret] for op in members)) + dx
        svg.append(
            f'<rect x="{x0}" y="{_TOP - 22}" width="{x1 - x0}" height="{height - _TOP + 16}" '
            'fill="#ffcdd2" fill-opacity="0.45"><title>failing window</title></rect>'
        )
    for p, y in y_of.items():
        svg.append(
            f'<text x="8" y="{y + _BAR - 5}">process {p}</text>'
            f'<line x1="{_LEFT}" x2="{width}" y1="{y + _BAR + 4}" y2="{y + _BAR + 4}" '
            'stroke="#eee"/>'
        )
    for op in ops:
        svg.append(
            _bar(op, x_of, dx, y_of[op.process], width, op.id in window, op.id == v.op, order)
        )
    svg.append("</svg>")
    note = (
        f'<p class="note">{len(ops)} of {len(operations_on(history, v.key))} operations on '
        "this key shown (the neighbourhood of the failing window).</p>"
        if cropped
        else ""
    )
    legend = (
        '<p class="legend">'
        f'<span><i class="swatch" style="background:{_FILL["ok"]}"></i>ok</span>'
        f'<span><i class="swatch" style="background:{_FILL["fail"]}"></i>fail (no effect)</span>'
        f'<span><i class="swatch" style="background:{_FILL["info"]}"></i>'
        "info (open-ended; the tick is the info event)</span>"
        '<span><i class="swatch" style="background:#fff;border:2px solid #c62828"></i>'
        "failing window</span>"
        "<span>✗ could not be linearized</span><span>#n: position in the longest "
        "linearizable prefix</span><span>faded: takes no part (fail, or a read without a "
        "value)</span></p>"
    )
    return f'<h2>Timeline</h2>{note}<div class="timeline">{"".join(svg)}</div>{legend}'


def _bar(
    op: Operation,
    x_of: dict[int, int],
    dx: int,
    y: int,
    width: int,
    in_window: bool,
    is_stuck: bool,
    order: dict[int, int],
) -> str:
    x = x_of[op.call]
    if op.type == "info":
        end = width - 8  # never closes
        fill = "url(#open)"
    else:
        # Through the completion's column: a process's next bar starts a column later.
        end = x_of[op.ret] + dx - 4
        fill = _FILL[op.type]
    stroke, stroke_width = ("#c62828", 3 if is_stuck else 2) if in_window else ("#666", 1)
    dim = "" if takes_part(op) else ' opacity="0.5" stroke-dasharray="3 2"'
    tip = (
        f"id {op.id}, process {op.process}: {describe(op)} -> {op.type}"
        f"{' (synthetic)' if op.synthetic else ''}; events {op.call}..{op.ret}"
    )
    out = [
        (
            f"<g><title>{escape(tip)}</title>"
            f'<rect x="{x}" y="{y}" width="{end - x}" height="{_BAR}" rx="3" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{stroke_width}"{dim}/>'
        )
    ]
    if op.type == "info":
        tick = x_of[op.ret]
        out.append(
            f'<line x1="{tick}" x2="{tick}" y1="{y - 2}" y2="{y + _BAR + 2}" stroke="#a15c00" '
            'stroke-dasharray="2 2"/>'
        )
    # The label is clipped to its bar (a nested svg clips); the tooltip has it all.
    mark = "✗ " if is_stuck else ""
    label = escape(f"{mark}{op.id}: {_short(op)}")
    colour = ' fill="#b71c1c" font-weight="bold"' if is_stuck else ""
    out.append(
        f'<svg x="{x + 3}" y="{y}" width="{max(end - x - 5, 1)}" height="{_BAR}">'
        f'<text x="0" y="{_BAR - 6}"{colour}>{label}</text></svg>'
    )
    if op.id in order:
        out.append(f'<text x="{x + 2}" y="{y - 2}" fill="#1565c0">#{order[op.id]}</text>')
    out.append("</g>")
    return "".join(out)


def _op_row(op: Operation, css: str = "", position: int | None = None) -> str:
    cls = f' class="{css}"' if css else ""
    cells = [
        str(op.id),
        str(op.process),
        describe(op),
        op.type + (" (synthetic)" if op.synthetic else ""),
        f"{op.call} .. {op.ret}" + (" .. ∞" if op.type == "info" else ""),
        "" if position is None else f"#{position}",
    ]
    return f"<tr{cls}>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"


_HEADER = (
    "<tr><th>id</th><th>process</th><th>operation</th><th>completion</th>"
    "<th>events (invoke .. completion)</th><th>in prefix</th></tr>"
)


def _window_table(v: Violation, by_id: dict[int, Operation]) -> str:
    order = {op_id: n + 1 for n, op_id in enumerate(v.prefix)}
    rows = [_op_row(by_id[v.op], "stuck", order.get(v.op))]
    rows += [_op_row(by_id[i], "window", order.get(i)) for i in v.window if i != v.op]
    return (
        "<h2>Failing window</h2><p>The operation that could not be linearized (first row) "
        "and the operations concurrent with it; #n is the position in the longest "
        "linearizable prefix.</p>"
        f'<table class="mono">{_HEADER}{"".join(rows)}</table>'
    )


def _prefix_list(v: Violation, by_id: dict[int, Operation]) -> str:
    shown = v.prefix[-40:]
    skipped = len(v.prefix) - len(shown)
    first = len(v.prefix) - len(shown) + 1
    rows = [_op_row(by_id[i], position=first + n) for n, i in enumerate(shown)]
    note = f'<p class="note">The first {skipped} are not listed.</p>' if skipped else ""
    return (
        f"<h2>Longest linearizable prefix ({len(v.prefix)} operations, in order)</h2>{note}"
        f'<table class="mono">{_HEADER}{"".join(rows)}</table>'
        f"<p>State after it: <code>{escape(json.dumps(v.state))}</code></p>"
    )
