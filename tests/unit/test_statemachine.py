"""StateMachine.apply: results, skips, dedup, CAS, TTL, purge, fail-stop on corruption."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from raftmem import commands as C
from raftmem.errors import CorruptionError, NotFound, ValidationError, from_result_error
from raftmem.statemachine import Reader, StateMachine, ops


class Log:
    """Applies commands at consecutive indexes, as Raft would."""

    def __init__(self, sm: StateMachine) -> None:
        self.sm = sm
        self.index = sm.applied_index

    def __call__(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        return self.sm.apply(self.index, C.encode(cmd))


def mem(mid: str, emb: Any = (1.0, 0.0, 0.0), **kw: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "id": mid,
        "agent_id": "agent",
        "text": f"text {mid}",
        "embedding": list(emb),
        "expires_at": None,
    }
    m.update(kw)
    return m


@pytest.fixture
def sm(tmp_path: Path) -> Iterator[StateMachine]:
    machine = StateMachine(str(tmp_path / "state.db"))
    yield machine
    machine.close()


@pytest.fixture
def log(sm: StateMachine) -> Log:
    lg = Log(sm)
    assert lg(C.create_namespace("ns", 3, "cosine", 1, None))["created"] is True
    return lg


@pytest.fixture
def reader(sm: StateMachine, log: Log) -> Iterator[Reader]:
    r = Reader(sm.path)
    yield r
    r.close()


def code(result: dict[str, Any]) -> str:
    assert result["ok"] is False, result
    return str(result["error"]["code"])


# --- namespaces --------------------------------------------------------------


def test_create_namespace_idempotent_and_conflicting(log: Log) -> None:
    again = log(C.create_namespace("ns", 3, "cosine", 999, "r1"))
    assert again == {
        "ok": True,
        "created": False,
        "namespace": {"name": "ns", "dim": 3, "metric": "cosine", "created_at": 1},
    }
    assert code(log(C.create_namespace("ns", 4, "cosine", 5, None))) == "namespace_conflict"
    assert code(log(C.create_namespace("ns", 3, "l2", 5, None))) == "namespace_conflict"
    assert log(C.create_namespace("other", 2, "l2", 7, None))["namespace"]["metric"] == "l2"


def test_namespace_queries(log: Log, reader: Reader) -> None:
    log(C.create_namespace("a-first", 2, "l2", 3, None))
    assert reader.get_namespace("ns") == {
        "name": "ns",
        "dim": 3,
        "metric": "cosine",
        "created_at": 1,
    }
    assert reader.get_namespace("missing") is None
    assert [n["name"] for n in reader.list_namespaces()] == ["a-first", "ns"]


# --- put / patch / delete ------------------------------------------------------


def test_put_result_shape(log: Log, reader: Reader) -> None:
    res = log(
        C.put(
            "ns",
            mem("m1", metadata={"z": 1, "a": {"y": 2, "b": 1}}, tags=["t"], expires_at=500),
            10,
            "r1",
            [1, 1],
        )
    )
    expected = {
        "id": "m1",
        "namespace": "ns",
        "agent_id": "agent",
        "text": "text m1",
        "metadata": {"a": {"b": 1, "y": 2}, "z": 1},
        "tags": ["t"],
        "version": 1,
        "created_at": 10,
        "updated_at": 10,
        "expires_at": 500,
    }
    assert res == {"ok": True, "memory": expected}
    assert "embedding" not in res["memory"]
    assert reader.get("ns", "m1", 11) == expected
    got = reader.get("ns", "m1", 11, include_embedding=True)
    assert got is not None and got["embedding"] == [1.0, 0.0, 0.0]


def test_put_errors(log: Log) -> None:
    log(C.put("ns", mem("m1"), 10, None, None))
    assert code(log(C.put("ns", mem("m1"), 11, None, None))) == "already_exists"
    assert code(log(C.put("nope", mem("m2"), 11, None, None))) == "namespace_not_found"
    bad = log(C.put("ns", mem("m2", emb=(1.0, 2.0)), 11, None, None))
    assert code(bad) == "dimension_mismatch"
    assert bad["error"]["expected"] == 3 and bad["error"]["got"] == 2
    assert code(log(C.put("ns", mem("m3", emb=(0.0, 0.0, 0.0)), 11, None, None))) == (
        "invalid_request"  # a zero vector has no cosine distance
    )


def test_put_batch_items_are_independent(log: Log, reader: Reader) -> None:
    log(C.put("ns", mem("dup"), 10, None, None))
    res = log(
        C.put_batch(
            "ns", [mem("a"), mem("dup"), mem("b", emb=(1.0,)), mem("a"), mem("c")], 20, "rb", None
        )
    )
    assert res["ok"] is True
    assert [r["ok"] for r in res["results"]] == [True, False, False, False, True]
    assert [r["error"]["code"] for r in res["results"] if not r["ok"]] == [
        "already_exists",
        "dimension_mismatch",
        "already_exists",
    ]
    assert [m["id"] for m in reader.list("ns", None, None, 10, None, 21)] == ["a", "c", "dup"]


def test_patch_and_cas(log: Log, reader: Reader) -> None:
    log(C.put("ns", mem("m", tags=["old"], metadata={"k": 1}), 10, None, None))
    res = log(
        C.patch(
            "ns",
            "m",
            {
                "text": "new",
                "tags": ["t1", "t2"],
                "metadata": {"x": 2},
                "agent_id": "b",
                "embedding": [0.0, 1.0, 0.0],
                "expires_at": 900,
            },
            1,
            20,
            None,
            None,
        )
    )
    m = res["memory"]
    assert (m["text"], m["tags"], m["metadata"], m["agent_id"]) == (
        "new",
        ["t1", "t2"],
        {"x": 2},
        "b",
    )
    assert (m["version"], m["created_at"], m["updated_at"], m["expires_at"]) == (2, 10, 20, 900)
    assert reader.get("ns", "m", 21) == m
    got = reader.get("ns", "m", 21, include_embedding=True)
    assert got is not None and got["embedding"] == [0.0, 1.0, 0.0]
    assert [x["id"] for x in reader.list("ns", None, "t2", 10, None, 21)] == ["m"]
    assert reader.list("ns", None, "old", 10, None, 21) == []

    miss = log(C.patch("ns", "m", {"text": "lost"}, 1, 30, None, None))
    assert code(miss) == "version_mismatch" and miss["error"]["current_version"] == 2
    assert log(C.patch("ns", "m", {}, None, 31, None, None))["memory"]["version"] == 3
    assert code(log(C.patch("ns", "nope", {"text": "x"}, None, 32, None, None))) == "not_found"
    assert code(log(C.patch("ns", "m", {"embedding": [1.0]}, None, 33, None, None))) == (
        "dimension_mismatch"
    )
    assert reader.get("ns", "m", 34)["version"] == 3  # type: ignore[index]


def test_delete_and_cas(log: Log, reader: Reader) -> None:
    log(C.put("ns", mem("m"), 10, None, None))
    log(C.patch("ns", "m", {"text": "v2"}, None, 11, None, None))
    miss = log(C.delete("ns", "m", 1, 12, None, None))
    assert code(miss) == "version_mismatch" and miss["error"]["current_version"] == 2
    assert log(C.delete("ns", "m", 2, 13, None, None)) == {
        "ok": True,
        "deleted": True,
        "version": 2,
    }
    assert reader.get("ns", "m", 14) is None
    assert code(log(C.delete("ns", "m", None, 15, None, None))) == "not_found"
    # The id is free again and starts a fresh history.
    assert log(C.put("ns", mem("m"), 16, None, None))["memory"]["version"] == 1


def test_errors_map_onto_the_client_hierarchy(log: Log) -> None:
    err = log(C.put("nope", mem("m"), 1, None, None))["error"]
    assert isinstance(from_result_error(err), NotFound)
    err = log(C.put("ns", mem("m", emb=(1.0,)), 1, None, None))["error"]
    assert isinstance(from_result_error(err), ValidationError)


# --- applied index, skips, dedup -----------------------------------------------------


def test_applied_index_advances_even_on_user_errors(sm: StateMachine, log: Log) -> None:
    start = sm.applied_index
    assert code(log(C.put("nope", mem("m"), 1, None, None))) == "namespace_not_found"
    assert sm.applied_index == start + 1
    assert log(C.barrier()) == {"ok": True}
    assert sm.applied_index == start + 2
    # Gaps are allowed (the Raft layer may apply entries that are not ours).
    sm.apply(start + 10, C.encode(C.barrier()))
    assert sm.applied_index == start + 10


def test_entries_at_or_below_applied_index_are_skipped(
    sm: StateMachine, log: Log, reader: Reader
) -> None:
    log(C.put("ns", mem("m"), 10, None, None))
    idx = sm.applied_index
    skipped = {"ok": True, "skipped": True}
    # Skipped without even decoding: a re-sent entry is never applied twice.
    assert sm.apply(idx, C.encode(C.put("ns", mem("other"), 11, None, None))) == skipped
    assert sm.apply(1, b"garbage") == skipped
    assert sm.applied_index == idx and reader.count("ns") == 1


def test_applied_index_survives_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with StateMachine(path) as sm:
        lg = Log(sm)
        lg(C.create_namespace("ns", 3, "l2", 1, None))
        lg(C.put("ns", mem("m"), 2, None, None))
    with StateMachine(path) as sm:
        assert sm.applied_index == 2
        assert sm.apply(2, C.encode(C.put("ns", mem("m"), 2, None, None)))["skipped"]
        with Reader(path) as r:
            assert r.applied_index() == 2 and r.count() == 1


def test_request_id_dedup_applies_once(log: Log, reader: Reader) -> None:
    first = log(C.put("ns", mem("m1"), 10, "req-1", None))
    # The node's retry builds a new command (new generated id, new ts) with the same id.
    retry = log(C.put("ns", mem("m2"), 20, "req-1", None))
    assert retry == first
    assert [m["id"] for m in reader.list("ns", None, None, 10, None, 30)] == ["m1"]

    miss = log(C.patch("ns", "m1", {"text": "x"}, 7, 30, "req-2", None))
    assert code(miss) == "version_mismatch"
    # Failures are recorded too: the retry does not apply though version 1 would match now.
    assert log(C.patch("ns", "m1", {"text": "x"}, 1, 31, "req-2", None)) == miss
    assert reader.get("ns", "m1", 32)["version"] == 1  # type: ignore[index]

    batch = log(C.put_batch("ns", [mem("b1"), mem("m1")], 40, "req-3", None))
    assert log(C.put_batch("ns", [mem("zz")], 41, "req-3", None)) == batch
    assert reader.get("ns", "zz", 42) is None

    ns_res = log(C.create_namespace("ns2", 2, "l2", 50, "req-4"))
    assert log(C.create_namespace("ns2", 9, "cosine", 51, "req-4")) == ns_res


def test_purge_drops_old_request_records(log: Log, reader: Reader) -> None:
    log(C.put("ns", mem("m1"), 10, "old", None))
    log(C.put("ns", mem("m2"), 100, "new", None))
    res = log(C.purge(200, 50))
    assert res == {"ok": True, "purged": 0, "requests_purged": 1}
    # "old" is forgotten: a late retry would now apply again (here: already_exists).
    assert code(log(C.put("ns", mem("m1"), 300, "old", None))) == "already_exists"
    assert log(C.put("ns", mem("m3"), 300, "new", None))["memory"]["id"] == "m2"


# --- TTL ---------------------------------------------------------------------------


def test_ttl_hides_expired_memories_before_purge(log: Log, reader: Reader) -> None:
    log(C.put("ns", mem("short", expires_at=100, tags=["t"]), 10, None, None))
    log(C.put("ns", mem("long", expires_at=None, tags=["t"]), 10, None, None))
    q = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    assert reader.get("ns", "short", 99) is not None
    assert reader.get("ns", "short", 100) is None  # expires_at is exclusive
    assert [m["id"] for m in reader.list("ns", None, "t", 10, None, 100)] == ["long"]
    assert [h["memory"]["id"] for h in reader.search("ns", q, 5, None, 100)] == ["long"]
    assert [h["memory"]["id"] for h in reader.search("ns", q, 5, {"tags_any": ["t"]}, 100)] == [
        "long"
    ]
    assert reader.count("ns") == 2 and reader.count("ns", now_ms=100) == 1


def test_writes_treat_expired_memories_as_gone(log: Log, reader: Reader) -> None:
    log(C.put("ns", mem("m", expires_at=100), 10, None, None))
    assert code(log(C.patch("ns", "m", {"text": "x"}, None, 100, None, None))) == "not_found"
    assert code(log(C.delete("ns", "m", None, 150, None, None))) == "not_found"
    # Before the deadline the memory is alive for writes too.
    log(C.put("ns", mem("n", expires_at=100), 10, None, None))
    assert log(C.patch("ns", "n", {"expires_at": None}, 1, 99, None, None))["ok"]
    # Putting over an expired id replaces it with a fresh memory.
    res = log(C.put("ns", mem("m", text="again", tags=["x"]), 200, None, None))
    assert res["memory"]["version"] == 1 and res["memory"]["created_at"] == 200
    assert reader.get("ns", "m", 201)["text"] == "again"  # type: ignore[index]
    assert reader.count("ns") == 2


def test_purge_removes_expired(log: Log, reader: Reader) -> None:
    for i in range(5):
        log(C.put("ns", mem(f"m{i}", expires_at=100 + i, tags=["t"]), 10, None, None))
    log(C.put("ns", mem("keep", tags=["t"]), 10, None, None))
    assert log(C.purge(102, 0))["purged"] == 3
    assert reader.count("ns") == 3
    assert [m["id"] for m in reader.list("ns", None, "t", 10, None, 0)] == ["keep", "m3", "m4"]
    assert log(C.purge(102, 0))["purged"] == 0


# --- list --------------------------------------------------------------------------


def test_list_filters_and_pages(log: Log, reader: Reader) -> None:
    for i in range(10):
        log(C.put("ns", mem(f"m{i:02d}", agent_id=f"a{i % 2}", tags=[f"t{i % 3}"]), 10, None, None))
    page1 = reader.list("ns", None, None, 4, None, 11)
    page2 = reader.list("ns", None, None, 4, page1[-1]["id"], 11)
    assert [m["id"] for m in page1 + page2] == [f"m{i:02d}" for i in range(8)]
    assert [m["id"] for m in reader.list("ns", "a1", "t0", 10, None, 11)] == ["m03", "m09"]
    assert reader.list("ns", None, None, 0, None, 11) == []
    assert reader.list("missing", None, None, 10, None, 11) == []
    with pytest.raises(ValidationError):
        reader.list("ns", None, None, -1, None, 11)


def test_reads_of_a_namespace_this_group_lacks_are_empty(reader: Reader) -> None:
    q = np.ones(3, dtype=np.float32)
    assert reader.get("missing", "m", 1) is None
    assert reader.search("missing", q, 3, None, 1) == []
    assert reader.count("missing") == 0


def test_reader_transaction_sees_one_state(sm: StateMachine, log: Log, reader: Reader) -> None:
    with reader.transaction():
        before = reader.applied_index()
        log(C.put("ns", mem("m"), 10, None, None))
        assert reader.applied_index() == before and reader.get("ns", "m", 11) is None
    assert reader.applied_index() == sm.applied_index
    assert reader.get("ns", "m", 11) is not None


# --- corruption ----------------------------------------------------------------------


def test_undecodable_entry_raises_and_leaves_index(sm: StateMachine, log: Log) -> None:
    idx = sm.applied_index
    with pytest.raises(CorruptionError):
        sm.apply(idx + 1, b"\x01{broken")
    assert sm.applied_index == idx
    with Reader(sm.path) as r:
        assert r.applied_index() == idx


def test_exception_inside_apply_rolls_back(
    sm: StateMachine, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_then_boom(conn: Any, cmd: dict[str, Any]) -> dict[str, Any]:
        ops.put(conn, cmd)  # writes the memory ...
        raise RuntimeError("bug")  # ... then fails

    monkeypatch.setitem(ops.HANDLERS, "put", half_then_boom)
    idx = sm.applied_index
    with pytest.raises(CorruptionError):
        sm.apply(idx + 1, C.encode(C.put("ns", mem("m"), 10, "rid", None)))
    assert sm.applied_index == idx
    monkeypatch.undo()
    with Reader(sm.path) as r:
        assert r.applied_index() == idx and r.count() == 0
    # Nothing was recorded for the request id: applying the entry again works.
    assert sm.apply(idx + 1, C.encode(C.put("ns", mem("m"), 10, "rid", None)))["ok"]


# --- group commit ----------------------------------------------------------------------


def _ids(hits: Any) -> list[str]:
    return sorted(h["memory"]["id"] for h in hits)


def test_group_commit_shows_a_batch_to_readers_only_at_flush(
    sm: StateMachine, log: Log, reader: Reader
) -> None:
    sm.group_commit = True
    before = sm.applied_index
    for i in range(3):
        assert log(C.put("ns", mem(f"m{i}", (1.0, float(i), 0.0)), 10, f"r{i}", None))["ok"]
    # Applied, not committed: neither the applied index nor any reader (SQLite
    # or the search index) sees the batch yet.
    assert sm.applied_index == before
    assert reader.applied_index() == before and reader.get("ns", "m0", 11) is None
    assert reader.search("ns", np.array([1.0, 0.0, 0.0], np.float32), 10, None, 11) == []
    sm.flush()
    assert sm.applied_index == reader.applied_index() == before + 3
    assert _ids(reader.search("ns", np.array([1.0, 0.0, 0.0], np.float32), 10, None, 11)) \
        == ["m0", "m1", "m2"]
    sm.flush()  # nothing open: a no-op
    assert sm.applied_index == before + 3


def test_group_commit_failure_rolls_back_the_whole_batch_and_replays_cleanly(
    sm: StateMachine, log: Log, reader: Reader, monkeypatch: pytest.MonkeyPatch
) -> None:
    sm.group_commit = True
    start = sm.applied_index
    entries = [C.encode(C.put("ns", mem(f"m{i}", (1.0, float(i), 0.0)), 10, f"r{i}", None))
               for i in range(3)]
    real_put = ops.HANDLERS["put"]

    def fail_on_m2(conn: Any, cmd: dict[str, Any]) -> dict[str, Any]:
        if cmd["memory"]["id"] == "m2":
            raise RuntimeError("bug")
        return real_put(conn, cmd)

    monkeypatch.setitem(ops.HANDLERS, "put", fail_on_m2)
    assert sm.apply(start + 1, entries[0])["ok"] and sm.apply(start + 2, entries[1])["ok"]
    with pytest.raises(CorruptionError):
        sm.apply(start + 3, entries[2])
    monkeypatch.undo()
    # The database, the search index and the applied index are back at the last
    # commit: the two good entries of the batch went with the bad one.
    assert sm.applied_index == start
    sm.flush()
    assert reader.applied_index() == start and reader.count() == 0
    assert reader.search("ns", np.array([1.0, 0.0, 0.0], np.float32), 10, None, 11) == []
    # Raft replays the entries from the applied index: they apply as if first seen.
    for i, e in enumerate(entries):
        assert sm.apply(start + 1 + i, e)["ok"]
    sm.flush()
    assert _ids(reader.search("ns", np.array([1.0, 0.0, 0.0], np.float32), 10, None, 11)) \
        == ["m0", "m1", "m2"]


def test_group_commit_keeps_what_close_finds_open(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    sm = StateMachine(path)
    sm.group_commit = True
    sm.apply(1, C.encode(C.create_namespace("ns", 3, "cosine", 1, None)))
    sm.apply(2, C.encode(C.put("ns", mem("m"), 10, None, None)))
    sm.close()
    with Reader(path) as r:
        assert r.applied_index() == 2 and r.get("ns", "m", 11) is not None


def test_bad_values_that_reach_the_log_are_results_not_corruption(
    sm: StateMachine, log: Log
) -> None:
    """A builder bypassed (or an older node) must not halt every replica of the group."""
    import orjson

    def raw(cmd: dict[str, Any]) -> dict[str, Any]:
        log.index += 1
        return sm.apply(log.index, b"\x01" + orjson.dumps(cmd))

    env = {"ts": 5, "request_id": None, "epoch": None}
    emb = C.pack_vector([1.0, 0.0, 0.0])
    cases: list[dict[str, Any]] = [
        {"op": "put", "ns": "ns", "memory": {"id": "x", "embedding": emb}, **env},
        {"op": "put", "ns": "ns", "memory": "nope", **env},
        {"op": "put", "ns": 5, "memory": {}, **env},
        {"op": "put", "ns": "ns", "memory": {**mem("x"), "embedding": emb, "tags": "t"}, **env},
        {
            "op": "put",
            "ns": "ns",
            "memory": {**mem("x"), "embedding": C.pack_vector([float("inf"), 0.0, 0.0])},
            **env,
        },
        {"op": "patch", "ns": "ns", "id": "x", "fields": {"bogus": 1}, "if_version": None, **env},
        {"op": "delete", "ns": "ns", "id": "x", "if_version": "1", **env},
        {
            "op": "create_namespace",
            "ns": "n2",
            "dim": -1,
            "metric": "l2",
            "ts": 1,
            "request_id": None,
        },
        {"op": "purge", "now": "soon", "dedup_before": 0},
        {"op": "put", "ns": "ns", "memory": mem("x"), "ts": 5, "request_id": 17, "epoch": None},
    ]
    for cmd in cases:
        if (
            cmd["op"] == "put"
            and isinstance(cmd["memory"], dict)
            and "embedding" in cmd["memory"]
            and not isinstance(cmd["memory"]["embedding"], str)
        ):
            cmd["memory"]["embedding"] = emb
        assert code(raw(cmd)) == "invalid_request", cmd
