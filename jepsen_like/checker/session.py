"""The session checker: read-your-writes and monotonic reads per session (pure).

A session tier promises each logical client (a *session*) two things, and
nothing about other clients:

* **read-your-writes** — a read sees the session's own acknowledged writes;
* **monotonic reads** — a read never sees an older state than an earlier read
  of the same session saw.

"Older" needs an order of a key's states, and raftmem gives one: every memory
has a ``version`` that its group's state machine increments on each update, in
log order. A write's reply carries the version it produced and a read's reply
the version it returned; the runner records both in the op (field
``version``) together with the op's session (field ``session``; a client keeps
its session across the new process ids Jepsen gives it after an ``info``).
An absent memory is version 0 (the workloads never delete). Then, per session
and key, with everything measured at the read's *invocation*:

* RYW: version(read) >= the highest version of an ``ok`` write (or cas) of
  the session to that key that had *completed* before the read was invoked;
* MR: version(read) >= the highest version of an ``ok`` read of the session
  of that key that had completed before the read was invoked.

Both are exactly the guarantees, not approximations: versions of one key are
totally ordered by the log, and an op only constrains reads that began after
it ended (so the check is sound for any grouping of processes into sessions,
sequential or not). Writes that ended ``info`` or ``fail`` and reads that did
not end ``ok`` constrain nothing (history-format.md). Ops without a session
(the final reads, ops of other checkers) are ignored; ok ops without a version
cannot be placed and are counted as ``unversioned``.

As a cross-check that costs nothing, every (key, version) must name one value
across all sessions: two different values at one version are reported as a
``version-conflict`` (a replica that diverged, or versions that are not what
this checker assumes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_REPORTED = 20
WRITES = ("write", "cas")


@dataclass(frozen=True, slots=True)
class Mark:
    """The op that set a floor: the version it produced or saw."""

    version: int
    op: int  # operation id
    f: str
    value: Any
    node: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.op,
            "f": self.f,
            "version": self.version,
            "value": self.value,
            "node": self.node,
        }


@dataclass(slots=True)
class _Floors:
    write: Mark | None = None  # the session's highest acked write to the key
    read: Mark | None = None  # the session's highest ok read of the key


def _version(ev: dict[str, Any]) -> int | None:
    v = ev.get("version")
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if ev["f"] == "read" and ev.get("value") is None:
        return 0  # absent (or never written): before every write
    return None


def _written_value(ev: dict[str, Any]) -> Any:
    value = ev.get("value")
    if ev["f"] == "cas" and isinstance(value, list) and len(value) == 2:
        return value[1]
    return value


def _key(ev: dict[str, Any]) -> str:
    return "null" if ev.get("key") is None else str(ev["key"])


def check_sessions(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Check every session in a format-1 event list; returns the checker's JSON verdict."""
    invokes: dict[int, dict[str, Any]] = {}
    floors_at_invoke: dict[int, _Floors] = {}
    floors: dict[tuple[Any, str], _Floors] = {}
    values: dict[tuple[str, int], Mark] = {}
    violations: list[dict[str, Any]] = []
    kinds: dict[str, int] = {}
    sessions: set[Any] = set()
    checked = unversioned = 0

    def report(v: dict[str, Any]) -> None:
        kinds[v["kind"]] = kinds.get(v["kind"], 0) + 1
        if len(violations) < MAX_REPORTED:
            violations.append(v)

    for ev in events:
        op_id = ev["id"]
        if ev["type"] == "invoke":
            invokes[op_id] = ev
            if ev.get("session") is not None and ev["f"] == "read":
                f = floors.get((ev["session"], _key(ev)))
                floors_at_invoke[op_id] = _Floors(f.write, f.read) if f else _Floors()
            continue
        inv = invokes.get(op_id, ev)
        session = ev.get("session", inv.get("session"))
        if ev["type"] != "ok" or ev["f"] not in ("read", *WRITES):
            floors_at_invoke.pop(op_id, None)
            continue
        version = _version(ev)
        key = _key(ev)
        if version is None:
            if session is not None:
                unversioned += 1
            floors_at_invoke.pop(op_id, None)
            continue
        mark = Mark(version, op_id, ev["f"], _written_value(ev), ev.get("node"))

        # Cross-check: one value per (key, version), whichever session saw it.
        if version > 0:
            seen = values.setdefault((key, version), mark)
            if seen.value != mark.value:
                report(
                    {
                        "kind": "version-conflict",
                        "key": key,
                        "version": version,
                        "op": mark.to_json(),
                        "other": seen.to_json(),
                    }
                )

        if session is None:
            continue
        sessions.add(session)
        f = floors.setdefault((session, key), _Floors())
        if ev["f"] == "read":
            checked += 1
            before = floors_at_invoke.pop(op_id, _Floors())
            for kind, floor in (
                ("read-your-writes", before.write),
                ("monotonic-reads", before.read),
            ):
                if floor is not None and version < floor.version:
                    report(
                        {
                            "kind": kind,
                            "session": session,
                            "key": key,
                            "process": ev.get("process"),
                            "read": mark.to_json(),
                            "floor": floor.to_json(),
                        }
                    )
                    break  # one report per read: RYW explains it best when both hold
            if f.read is None or version > f.read.version:
                f.read = mark
        elif f.write is None or version > f.write.version:
            f.write = mark

    out: dict[str, Any] = {
        "valid": not violations,
        "sessions": len(sessions),
        "reads_checked": checked,
        "unversioned": unversioned,
    }
    if not sessions:
        out["valid"] = "unknown"
        out["reason"] = "no session operations in the history"
    if violations:
        out["violation_count"] = sum(kinds.values())
        out["kinds"] = kinds
        out["violations"] = violations
        out["reason"] = describe(violations[0])
    return out


def describe(v: dict[str, Any]) -> str:
    """One violation as a sentence."""
    if v["kind"] == "version-conflict":
        return (
            f"version-conflict: key {v['key']!r} version {v['version']} has value "
            f"{v['op']['value']!r} (op {v['op']['id']}) and {v['other']['value']!r} "
            f"(op {v['other']['id']})"
        )
    r, fl = v["read"], v["floor"]
    return (
        f"{v['kind']}: session {v['session']} read key {v['key']!r} at version {r['version']} "
        f"(value {r['value']!r}, op {r['id']}, node {r['node']}) after its {fl['f']} op "
        f"{fl['id']} at version {fl['version']} (value {fl['value']!r}, node {fl['node']})"
    )
