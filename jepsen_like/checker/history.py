"""A history: reading and validating the format of history-format.md (version 1).

The reader accepts any file in the format, including ones `jepsen_like` did not
write: unknown keys are ignored, and anything the format forbids is a
`HistoryError` that names the event (``ops[17] (id 5)``) and what is wrong with
it. The checker trusts a `History` once it is built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from jepsen_like.checker.values import same

FORMAT = 1
MODELS = ("cas-register", "kv", "multi-register")
COMPLETIONS = ("ok", "fail", "info")
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "cas-register": ("read", "write", "cas"),
    "kv": ("read", "write", "cas", "append"),
    "multi-register": ("txn",),
}
_MISSING = object()


class HistoryError(ValueError):
    """A history that is not in the format; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: an invocation and its completion, paired by id."""

    id: int
    process: int
    f: str
    key: str | None
    value: Any  # the invocation's value (JSON)
    result: Any  # the completion's value (JSON): a read's value, a txn with reads filled in
    type: str  # the completion: "ok", "fail" or "info"
    call: int  # index in `ops` of the invocation
    ret: int  # index in `ops` of the completion event
    synthetic: bool = False


@dataclass(frozen=True, slots=True)
class History:
    name: str
    model: str
    initial_value: Any
    expected_linearizable: bool | None
    operations: tuple[Operation, ...]  # in invocation order
    n_events: int
    source: str | None = None  # the file it was read from, if any
    notes: str | None = None


def load_history(path: str | Path) -> History:
    """Read and validate one history file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits, which JSON allows; the standard
        # library decides, and its message is the one reported.
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HistoryError(f"{path}: not JSON: {exc}") from exc
    return parse_history(doc, source=str(path))


def parse_history(doc: Any, source: str | None = None) -> History:
    """Validate a decoded history document and pair its events into operations."""
    where = f"{source}: " if source else ""
    try:
        return _parse(doc, source)
    except HistoryError as exc:
        raise HistoryError(f"{where}{exc}") from None


def _parse(doc: Any, source: str | None) -> History:
    if not isinstance(doc, dict):
        raise HistoryError("a history is a JSON object")
    fmt = doc.get("format", _MISSING)
    if fmt is _MISSING:
        raise HistoryError(f'missing "format" (expected {FORMAT})')
    if not _is_int(fmt) or fmt != FORMAT:
        raise HistoryError(f"unsupported format {fmt!r} (this reader knows format {FORMAT})")
    model = doc.get("model")
    if model not in MODELS:
        raise HistoryError(f"unknown model {model!r} (known: {', '.join(MODELS)})")
    name = doc.get("name")
    if name is None:
        name = Path(source).stem if source else "history"
    elif not isinstance(name, str):
        raise HistoryError(f'"name" must be a string, not {name!r}')
    expected = doc.get("expected_linearizable")
    if expected is not None and not isinstance(expected, bool):
        raise HistoryError(f'"expected_linearizable" must be true, false or null, not {expected!r}')
    initial = doc.get("initial_value")
    if model == "multi-register" and initial is not None and not isinstance(initial, dict):
        raise HistoryError('"initial_value" of a multi-register history must be an object')
    notes = doc.get("notes")
    events = doc.get("ops", _MISSING)
    if events is _MISSING:
        raise HistoryError('missing "ops"')
    if not isinstance(events, list):
        raise HistoryError('"ops" must be a list of events')
    operations = _pair(events, model)
    return History(
        name=name,
        model=model,
        initial_value=initial,
        expected_linearizable=expected,
        operations=operations,
        n_events=len(events),
        source=source,
        notes=notes if isinstance(notes, str) else None,
    )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _pair(events: list[Any], model: str) -> tuple[Operation, ...]:
    functions = FUNCTIONS[model]
    # id -> (index of invoke, event); ids of closed ops; process -> open id
    open_ops: dict[int, tuple[int, dict[str, Any]]] = {}
    closed: set[int] = set()
    open_by_process: dict[int, int] = {}
    done: list[tuple[int, Operation]] = []
    last_time: int | None = None
    for i, ev in enumerate(events):
        if not isinstance(ev, dict):
            raise HistoryError(f"ops[{i}]: an event is an object, not {type(ev).__name__}")
        op_id = ev.get("id", _MISSING)
        at = f"ops[{i}] (id {op_id!r})" if op_id is not _MISSING else f"ops[{i}]"
        if not _is_int(op_id):
            raise HistoryError(f'{at}: "id" must be an integer')
        process = ev.get("process", _MISSING)
        if not _is_int(process):
            raise HistoryError(f'{at}: "process" must be an integer, not {process!r}')
        kind = ev.get("type")
        if kind != "invoke" and kind not in COMPLETIONS:
            raise HistoryError(f'{at}: "type" must be invoke, ok, fail or info, not {kind!r}')
        f = ev.get("f")
        if f not in functions:
            raise HistoryError(
                f"{at}: f {f!r} is not an operation of model {model} ({', '.join(functions)})"
            )
        key = ev.get("key")
        if model == "kv":
            if not isinstance(key, str):
                raise HistoryError(f'{at}: a kv event needs a string "key", not {key!r}')
        elif key is not None:
            raise HistoryError(f'{at}: "key" must be null in a {model} history, not {key!r}')
        t = ev.get("time", _MISSING)
        if t is not _MISSING:
            if not _is_int(t):
                raise HistoryError(f'{at}: "time" must be an integer, not {t!r}')
            if last_time is not None and t < last_time:
                raise HistoryError(
                    f"{at}: time {t} is before the previous event's {last_time}; "
                    "time must not contradict the order of events"
                )
            last_time = t
        if kind == "invoke":
            if op_id in open_ops or op_id in closed:
                raise HistoryError(f"{at}: operation id {op_id} is invoked twice")
            other = open_by_process.get(process)
            if other is not None:
                raise HistoryError(
                    f"{at}: process {process} invokes operation {op_id} while its "
                    f"operation {other} (ops[{open_ops[other][0]}]) is still open"
                )
            _check_invoke_value(at, f, ev.get("value"))
            open_ops[op_id] = (i, ev)
            open_by_process[process] = op_id
            continue
        opened = open_ops.pop(op_id, None)
        if opened is None:
            if op_id in closed:
                raise HistoryError(f"{at}: operation {op_id} completes twice")
            raise HistoryError(f"{at}: completion of operation {op_id}, which was never invoked")
        call, inv = opened
        closed.add(op_id)
        if inv["process"] != process:
            raise HistoryError(
                f"{at}: operation {op_id} was invoked by process {inv['process']} "
                f"but completed by process {process}"
            )
        if inv["f"] != f:
            raise HistoryError(
                f"{at}: operation {op_id} was invoked as {inv['f']} but completes as {f}"
            )
        if inv.get("key") != key:
            raise HistoryError(
                f"{at}: operation {op_id} was invoked on key {inv.get('key')!r} "
                f"but completes on key {key!r}"
            )
        del open_by_process[process]
        value = inv.get("value")
        result = ev.get("value")
        if kind == "ok":
            _check_ok_value(at, f, value, ev.get("value", _MISSING))
        op = Operation(
            id=op_id,
            process=process,
            f=f,
            key=key,
            value=value,
            result=result,
            type=kind,
            call=call,
            ret=i,
            synthetic=ev.get("synthetic") is True,
        )
        done.append((call, op))
    if open_ops:
        ids = sorted(open_ops, key=lambda k: open_ops[k][0])
        shown = ", ".join(f"{k} (ops[{open_ops[k][0]}])" for k in ids[:10])
        more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
        raise HistoryError(
            f"{len(ids)} invocation(s) never complete: {shown}{more}; every invocation "
            "needs a completion (a writer records an info for one that never returned)"
        )
    done.sort(key=lambda pair: pair[0])
    return tuple(op for _, op in done)


def _check_invoke_value(at: str, f: str, value: Any) -> None:
    if f == "cas":
        if not (isinstance(value, list) and len(value) == 2):
            raise HistoryError(f"{at}: a cas value is [expected, new], not {value!r}")
    elif f == "append":
        if not isinstance(value, str):
            raise HistoryError(f"{at}: an append value is a string, not {value!r}")
    elif f == "txn":
        if not isinstance(value, list):
            raise HistoryError(f"{at}: a txn value is a list of [f, key, value], not {value!r}")
        for mop in value:
            if not (
                isinstance(mop, list)
                and len(mop) == 3
                and mop[0] in ("read", "write")
                and isinstance(mop[1], str)
            ):
                raise HistoryError(
                    f'{at}: a txn micro-op is ["read"|"write", key, value], not {mop!r}'
                )


def _check_ok_value(at: str, f: str, invoked: Any, completed: Any) -> None:
    """An ok completion repeats the invocation's value (txn: with read values filled in)."""
    if f == "read" or completed is _MISSING:
        return
    if f == "txn":
        same_shape = (
            isinstance(completed, list)
            and len(completed) == len(invoked)
            and all(
                isinstance(c, list)
                and len(c) == 3
                and c[0] == m[0]
                and c[1] == m[1]
                and (m[0] == "read" or same(c[2], m[2]))
                for c, m in zip(completed, invoked, strict=False)
            )
        )
        if not same_shape:
            raise HistoryError(
                f"{at}: the ok txn {completed!r} does not match its invocation {invoked!r}"
            )
        return
    if not same(invoked, completed):
        raise HistoryError(
            f"{at}: the ok {f} completes with value {completed!r} but was invoked with {invoked!r}"
        )
