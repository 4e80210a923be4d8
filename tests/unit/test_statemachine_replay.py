"""Determinism: one command list, many databases, one state.

* A fixed command list replayed into two fresh databases gives identical
  results, digests, logical content and even identical stored bytes/rowids.
* Crash + replay of the whole log (entries at or below the applied index are
  skipped) and snapshot + replay of the tail converge to the same digest.
* Hypothesis drives random command sequences through the state machine and a
  tiny in-Python reference model and compares every result and the end state.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftmem import commands as C
from raftmem.statemachine import Reader, StateMachine

# --- a fixed, representative command list ---------------------------------------------


def _mem(rng: np.random.Generator, mid: str, dim: int, **kw: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "id": mid,
        "agent_id": f"agent-{rng.integers(3)}",
        "text": f"memory {mid} ✓",
        "embedding": rng.standard_normal(dim).astype(np.float32),
        "metadata": {"n": int(rng.integers(5)), "nested": {"b": [1, 2.5], "a": None}},
        "tags": sorted({f"t{rng.integers(4)}" for _ in range(2)}),
        "expires_at": None,
    }
    m.update(kw)
    return m


def command_list() -> list[bytes]:
    rng = np.random.default_rng(7)
    cmds: list[dict[str, Any]] = [
        C.create_namespace("docs", 8, "cosine", 1_000, "ns-1"),
        C.create_namespace("code", 4, "l2", 1_001, "ns-2"),
        C.create_namespace("docs", 8, "cosine", 1_002, "ns-3"),  # same definition again
        C.create_namespace("docs", 9, "cosine", 1_003, None),  # conflict
    ]
    ts = 2_000
    for i in range(30):
        ts += 10
        ttl = None if i % 4 else ts + 50
        cmds.append(C.put("docs", _mem(rng, f"d{i:02d}", 8, expires_at=ttl), ts, f"p{i}", [1, 1]))
    cmds.append(C.put("docs", _mem(rng, "d03", 8), ts, "p3", [1, 1]))  # retry of p3
    cmds.append(C.put("docs", _mem(rng, "d05", 8), ts, None, [1, 1]))  # already_exists
    cmds.append(C.put("nope", _mem(rng, "x", 8), ts, None, None))  # namespace_not_found
    cmds.append(C.put("docs", _mem(rng, "bad", 3), ts, None, None))  # dimension_mismatch
    cmds.append(
        C.put_batch("code", [_mem(rng, f"c{i}", 4) for i in range(12)], ts + 1, "b1", [1, 1])
    )
    cmds.append(
        C.put_batch(
            "code",
            [_mem(rng, "c1", 4), _mem(rng, "c99", 4), _mem(rng, "c98", 5)],
            ts + 2,
            "b2",
            [1, 1],
        )
    )
    cmds.append(C.put_batch("code", [_mem(rng, "zzz", 4)], ts + 3, "b1", [1, 1]))  # retry of b1
    ts += 100
    for i in range(0, 30, 3):
        fields = {"text": f"patched {i}", "tags": ["p"], "embedding": rng.standard_normal(8)}
        cmds.append(
            C.patch("docs", f"d{i:02d}", fields, 1 if i % 2 else 7, ts + i, f"pa{i}", [1, 1])
        )
    cmds.append(C.patch("docs", "d01", {"metadata": {"z": True}}, None, ts, "pa1", [1, 1]))
    cmds.append(C.patch("docs", "d01", {"metadata": {"z": False}}, None, ts, "pa1", [1, 1]))
    cmds.append(C.patch("code", "c2", {"expires_at": ts + 5}, None, ts, None, [1, 1]))
    cmds.append(C.delete("docs", "d02", None, ts, "del-1", [1, 1]))
    cmds.append(C.delete("docs", "d02", None, ts, "del-1", [1, 1]))  # retry
    cmds.append(C.delete("docs", "d07", 5, ts, None, [1, 1]))  # version_mismatch
    cmds.append(C.delete("docs", "d404", None, ts, None, [1, 1]))  # not_found
    cmds.append(C.purge(ts + 10, 2_100))
    cmds.append(C.barrier())
    cmds.append(C.put("docs", _mem(rng, "d00", 8), ts + 20, "again", [1, 1]))  # over expired
    cmds.append(C.put("docs", _mem(rng, "d99", 8), ts + 21, None, [1, 1]))
    cmds.append(C.purge(ts + 30, ts))
    return [C.encode(c) for c in cmds]


def replay(path: str, payloads: list[bytes], first_index: int = 1) -> list[dict[str, Any]]:
    with StateMachine(path) as sm:
        return [sm.apply(first_index + i, p) for i, p in enumerate(payloads)]


def stored_rows(path: str) -> list[Any]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        out: list[Any] = []
        for table in ("namespaces", "memories", "memory_tags", "requests"):
            out.append(conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall())
        return out
    finally:
        conn.close()


def digest(path: str) -> str:
    with Reader(path) as r:
        return r.digest()


def test_replay_into_two_fresh_databases_is_identical(tmp_path: Path) -> None:
    payloads = command_list()
    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    results_a = replay(a, payloads)
    results_b = replay(b, payloads)
    assert results_a == results_b
    # The list exercises what it claims to.
    codes = {r["error"]["code"] for r in results_a if not r["ok"]}
    assert codes >= {
        "namespace_conflict",
        "already_exists",
        "namespace_not_found",
        "dimension_mismatch",
        "version_mismatch",
        "not_found",
    }
    with Reader(a) as ra, Reader(b) as rb:
        assert ra.digest() == rb.digest()
        assert ra.content() == rb.content()
        assert ra.applied_index() == rb.applied_index() == len(payloads)
        assert ra.count() > 20
    # Byte-identical storage, rowids included (they key the vec0 tables).
    assert stored_rows(a) == stored_rows(b)


def test_crash_and_full_replay_converges(tmp_path: Path) -> None:
    payloads = command_list()
    ref = str(tmp_path / "ref.db")
    replay(ref, payloads)
    crashed = str(tmp_path / "crashed.db")
    replay(crashed, payloads[:25])
    # After a restart Raft replays its whole log; applied entries are skipped.
    results = replay(crashed, payloads)
    assert all(r == {"ok": True, "skipped": True} for r in results[:25])
    assert not any(r.get("skipped") for r in results[25:])
    assert digest(crashed) == digest(ref)


def test_snapshot_plus_tail_converges(tmp_path: Path) -> None:
    payloads = command_list()
    ref = str(tmp_path / "ref.db")
    replay(ref, payloads)
    leader = str(tmp_path / "leader.db")
    replay(leader, payloads[:30])
    snap = str(tmp_path / "snap")
    with StateMachine(leader) as sm:
        sm.snapshot_to(snap, b"meta")
    follower = str(tmp_path / "follower.db")
    with StateMachine(follower) as sm:
        assert sm.install_snapshot(snap)
        for i, p in enumerate(payloads, start=1):
            sm.apply(i, p)
    assert digest(follower) == digest(ref)


def test_digest_sees_every_kind_of_difference(tmp_path: Path) -> None:
    def one_put(name: str, request_id: str | None = None, **changes: Any) -> str:
        m = {
            "id": "m",
            "agent_id": "a",
            "text": "t",
            "embedding": [1.0, 2.0],
            "metadata": {"k": 1},
            "tags": ["x"],
            "expires_at": None,
            **changes,
        }
        path = str(tmp_path / f"{name}.db")
        replay(
            path,
            [
                C.encode(C.create_namespace("ns", 2, "l2", 1, None)),
                C.encode(C.put("ns", m, 2, request_id, None)),
            ],
        )
        return digest(path)

    base = one_put("base")
    assert one_put("again") == base  # the applied index and file are not part of it
    variants = [
        one_put("embedding", embedding=[1.0, 2.5]),
        one_put("metadata", metadata={"k": 1.5}),
        one_put("tags", tags=["y"]),
        one_put("expiry", expires_at=10_000),
        one_put("request", request_id="rid"),
    ]
    assert len({base, *variants}) == 1 + len(variants)


# --- model-based: random command sequences vs a tiny reference model -----------------


@dataclass
class Model:
    """What the state machine should do, written as plainly as possible."""

    namespaces: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    mems: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    requests: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)

    @staticmethod
    def err(code: str, **details: Any) -> dict[str, Any]:
        return {"ok": False, "error": {"code": code, **details}}

    def live(self, ns: str, mid: str, ts: int) -> dict[str, Any] | None:
        m = self.mems.get((ns, mid))
        if m is None or (m["expires_at"] is not None and m["expires_at"] <= ts):
            return None
        return m

    def public(self, m: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in m.items() if k != "embedding"}

    def check_emb(self, ns: str, emb: list[float]) -> dict[str, Any] | None:
        dim, metric, _ = self.namespaces[ns]
        if len(emb) != dim:
            return self.err("dimension_mismatch", expected=dim, got=len(emb))
        if metric == "cosine" and not any(emb):
            return self.err("invalid_request")
        return None

    def put_one(self, ns: str, m: dict[str, Any], ts: int) -> dict[str, Any]:
        bad = self.check_emb(ns, m["embedding"])
        if bad:
            return bad
        if self.live(ns, m["id"], ts):
            return self.err("already_exists")
        rec = {
            "id": m["id"],
            "namespace": ns,
            "agent_id": m["agent_id"],
            "text": m["text"],
            "metadata": m["metadata"],
            "tags": m["tags"],
            "version": 1,
            "created_at": ts,
            "updated_at": ts,
            "expires_at": m["expires_at"],
            "embedding": m["embedding"],
        }
        self.mems[(ns, m["id"])] = rec
        return {"ok": True, "memory": self.public(rec)}

    def run(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "barrier":
            return {"ok": True}
        if op == "purge":
            gone = [
                key
                for key, m in self.mems.items()
                if m["expires_at"] is not None and m["expires_at"] <= cmd["now"]
            ]
            for key in gone:
                del self.mems[key]
            old = [r for r, (_, ts) in self.requests.items() if ts < cmd["dedup_before"]]
            for r in old:
                del self.requests[r]
            return {"ok": True, "purged": len(gone), "requests_purged": len(old)}
        rid, ts = cmd["request_id"], cmd["ts"]
        if rid is not None and rid in self.requests:
            return self.requests[rid][0]
        result = self.run_data(cmd)
        if rid is not None:
            self.requests[rid] = (result, ts)
        return result

    def run_data(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op, ns, ts = cmd["op"], cmd["ns"], cmd["ts"]
        if op == "create_namespace":
            if ns in self.namespaces:
                dim, metric, created = self.namespaces[ns]
                definition = {"name": ns, "dim": dim, "metric": metric, "created_at": created}
                if (dim, metric) != (cmd["dim"], cmd["metric"]):
                    return self.err("namespace_conflict", namespace=definition)
                return {"ok": True, "namespace": definition, "created": False}
            self.namespaces[ns] = (cmd["dim"], cmd["metric"], ts)
            return {
                "ok": True,
                "created": True,
                "namespace": {
                    "name": ns,
                    "dim": cmd["dim"],
                    "metric": cmd["metric"],
                    "created_at": ts,
                },
            }
        if ns not in self.namespaces:
            return self.err("namespace_not_found")
        if op == "put":
            return self.put_one(ns, cmd["memory"], ts)
        if op == "put_batch":
            return {"ok": True, "results": [self.put_one(ns, m, ts) for m in cmd["memories"]]}
        fields = cmd.get("fields", {})
        if "embedding" in fields:
            bad = self.check_emb(ns, fields["embedding"])
            if bad:
                return bad
        m = self.live(ns, cmd["id"], ts)
        if m is None:
            return self.err("not_found")
        if cmd["if_version"] is not None and cmd["if_version"] != m["version"]:
            return self.err("version_mismatch", current_version=m["version"])
        if op == "delete":
            del self.mems[(ns, cmd["id"])]
            return {"ok": True, "deleted": True, "version": m["version"]}
        m.update(fields)
        m["version"] += 1
        m["updated_at"] = ts
        return {"ok": True, "memory": self.public(m)}


def strip_messages(result: Any) -> Any:
    """Results compared without their human-readable messages."""
    if isinstance(result, dict):
        return {k: strip_messages(v) for k, v in result.items() if k != "message"}
    if isinstance(result, list):
        return [strip_messages(v) for v in result]
    return result


NAMESPACES = ["cos", "euc", "none"]
IDS = ["m0", "m1", "m2"]
# Mostly no request id; a few ids reused across commands exercise dedup.
RIDS = [None] * 8 + ["r0", "r1", "r2", "r3"]

# Mostly the namespaces' dimension (2), sometimes not; zero vectors now and then.
vectors = st.sampled_from([2, 2, 2, 2, 2, 1, 3]).flatmap(
    lambda n: st.lists(st.integers(-2, 2).map(float), min_size=n, max_size=n)
)
namespaces = st.sampled_from(["cos", "euc", "euc", "none"])


@st.composite
def memories(draw: st.DrawFn, ts: int) -> dict[str, Any]:
    return {
        "id": draw(st.sampled_from(IDS)),
        "agent_id": draw(st.sampled_from(["x", "y"])),
        "text": draw(st.sampled_from(["", "hello", "ünï"])),
        "embedding": draw(vectors),
        "metadata": draw(st.sampled_from([{}, {"k": 1}, {"k": [1, {"b": 2, "a": 1}]}])),
        "tags": draw(st.lists(st.sampled_from(["t1", "t2"]), max_size=2)),
        "expires_at": draw(st.sampled_from([None, None, ts + 5, ts + 10])),
    }


@st.composite
def command_sequences(draw: st.DrawFn) -> list[dict[str, Any]]:
    ts = 1_000
    out: list[dict[str, Any]] = [
        C.create_namespace("cos", 2, "cosine", ts, None),
        C.create_namespace("euc", 2, "l2", ts, "r0"),
    ]
    for _ in range(draw(st.integers(1, 50))):
        # Steps of 5 land exactly on expiry deadlines (ts + 5, ts + 10) often.
        ts += draw(st.sampled_from([0, 5, 5, 10]))
        kind = draw(
            st.sampled_from(
                [
                    "ns",
                    "put",
                    "put",
                    "put",
                    "batch",
                    "patch",
                    "patch",
                    "patch",
                    "delete",
                    "purge",
                    "barrier",
                ]
            )
        )
        ns = draw(namespaces)
        rid = draw(st.sampled_from(RIDS))
        if kind == "ns":
            metric = draw(st.sampled_from(["l2", "cosine"]))
            out.append(C.create_namespace(ns, draw(st.sampled_from([2, 3])), metric, ts, rid))
        elif kind == "put":
            out.append(C.put(ns, draw(memories(ts)), ts, rid, [1, 1]))
        elif kind == "batch":
            batch = draw(st.lists(memories(ts), max_size=3))
            out.append(C.put_batch(ns, batch, ts, rid, [1, 1]))
        elif kind in ("patch", "delete"):
            mid = draw(st.sampled_from(IDS))
            if_version = draw(st.sampled_from([None, None, 1, 2]))
            if kind == "delete":
                out.append(C.delete(ns, mid, if_version, ts, rid, [1, 1]))
            else:
                fields = draw(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "text": st.sampled_from(["a", "b"]),
                            "embedding": vectors,
                            "tags": st.lists(st.sampled_from(["t1", "t2", "t3"]), max_size=2),
                            "metadata": st.sampled_from([{}, {"k": 2}]),
                            "agent_id": st.sampled_from(["x", "z"]),
                            "expires_at": st.sampled_from([None, ts + 5]),
                        },
                    )
                )
                out.append(C.patch(ns, mid, fields, if_version, ts, rid, [1, 1]))
        elif kind == "purge":
            out.append(C.purge(ts, ts - draw(st.sampled_from([0, 5, 20]))))
        else:
            out.append(C.barrier())
    return out


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="raftmem-sm-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _model_cmd(cmd: dict[str, Any]) -> dict[str, Any]:
    """The builder's command with plain lists for embeddings, as the model wants them."""
    return orjson.loads(orjson.dumps(cmd, option=orjson.OPT_SERIALIZE_NUMPY))  # type: ignore[no-any-return]


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cmds=command_sequences())
def test_state_machine_matches_reference_model(scratch: Path, cmds: list[dict[str, Any]]) -> None:
    work = Path(tempfile.mkdtemp(dir=scratch))
    model = Model()
    path_a, path_b = str(work / "a.db"), str(work / "b.db")
    with StateMachine(path_a) as sm:
        for index, cmd in enumerate(cmds, start=1):
            got = sm.apply(index, C.encode(cmd))
            want = model.run(_model_cmd(cmd))
            assert strip_messages(got) == strip_messages(want), (index, cmd["op"])
    # Replaying the same list elsewhere reaches the same state.
    replay(path_b, [C.encode(c) for c in cmds])
    last_ts = max((c.get("ts", c.get("now", 0)) for c in cmds), default=0)
    with Reader(path_a) as ra, Reader(path_b) as rb:
        assert ra.digest() == rb.digest()
        for ns in NAMESPACES:
            for now in (last_ts, last_ts + 100):
                listed = ra.list(ns, None, None, 100, None, now)
                expected = sorted(
                    (
                        model.public(m)
                        for (n, _), m in model.mems.items()
                        if n == ns and model.live(ns, m["id"], now)
                    ),
                    key=lambda m: m["id"],
                )
                assert listed == expected
                for want in expected:
                    stored = ra.get(ns, want["id"], now, include_embedding=True)
                    assert stored is not None
                    assert stored["embedding"] == model.mems[(ns, want["id"])]["embedding"]
    shutil.rmtree(work, ignore_errors=True)
