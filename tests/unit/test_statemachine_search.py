"""Reader.search is EXACT top-k by (distance, id), with filters and TTL.

Checked against a numpy brute force: every answer must be a valid exact answer
(right length, only matching live memories, distances as numpy computes them,
ordered by (distance, id), nothing nearer left out). Exact ties are built in
on purpose, because vec0's KNN cuts ties arbitrarily.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from raftmem import commands as C
from raftmem.errors import ValidationError
from raftmem.statemachine import Reader, StateMachine
from raftmem.statemachine.reader import VEC0_MAX_K

DIM = 8
N = 400
NOW = 50_000
TAGS = ["red", "green", "blue", "x y", "ünï"]
EPS = 1e-5


def build(path: str) -> dict[str, list[dict[str, Any]]]:
    """Two namespaces of random memories, with duplicate vectors and expired ones."""
    rng = np.random.default_rng(42)
    records: dict[str, list[dict[str, Any]]] = {"cos": [], "euc": []}
    with StateMachine(path) as sm:
        index = 0

        def apply(cmd: dict[str, Any]) -> dict[str, Any]:
            nonlocal index
            index += 1
            return sm.apply(index, C.encode(cmd))

        apply(C.create_namespace("cos", DIM, "cosine", 1, None))
        apply(C.create_namespace("euc", DIM, "l2", 1, None))
        for ns, recs in records.items():
            vectors = rng.standard_normal((N, DIM)).astype(np.float32)
            vectors[N // 2 : N // 2 + 40] = vectors[0]  # 41 identical vectors: exact ties
            batch = []
            for i in range(N):
                ts = 1_000 + i * 100
                md: dict[str, Any] = {"n": int(i % 4), "color": ["red", "blue"][i % 2]}
                if i % 5 == 0:
                    md["flag"] = bool(i % 10)
                if i % 7 == 0:
                    md["obj"] = {"b": [1, 2], "a": i % 3}
                if i % 11 == 0:
                    md["n"] = float(i % 4)  # stored as a JSON float; equals the integer
                m = {
                    "id": f"{ns}-{(i * 7919) % N:04d}",  # ids not in insertion order
                    "agent_id": f"agent{i % 3}",
                    "text": f"memory {i}",
                    "embedding": vectors[i],
                    "metadata": md,
                    "tags": [t for j, t in enumerate(TAGS) if (i >> j) & 1],
                    "expires_at": NOW - 1 if i % 9 == 0 else (NOW + 5 if i % 13 == 0 else None),
                }
                batch.append(m)
                recs.append({**m, "created_at": ts})
                apply(C.put(ns, m, ts, None, None))
    return records


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    path = str(tmp_path_factory.mktemp("search") / "state.db")
    records = build(path)
    yield path, records


@pytest.fixture
def reader(db: tuple[str, dict[str, Any]]) -> Iterator[Reader]:
    r = Reader(db[0])
    yield r
    r.close()


def canonical(v: Any) -> bytes:
    return orjson.dumps(v, option=orjson.OPT_SORT_KEYS)


def json_equal(a: Any, b: Any) -> bool:
    """The documented metadata equality: JSON types must match, numbers by value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return canonical(a) == canonical(b)
    return type(a) is type(b) and a == b


def matches(m: dict[str, Any], flt: dict[str, Any] | None, now: int) -> bool:
    if m["expires_at"] is not None and m["expires_at"] <= now:
        return False
    flt = flt or {}
    if flt.get("agent_id") is not None and m["agent_id"] != flt["agent_id"]:
        return False
    if flt.get("tags_any") and not set(flt["tags_any"]) & set(m["tags"]):
        return False
    if not set(flt.get("tags_all") or []) <= set(m["tags"]):
        return False
    for key, want in (flt.get("metadata") or {}).items():
        if key not in m["metadata"] or not json_equal(m["metadata"][key], want):
            return False
    if flt.get("created_after") is not None and not m["created_at"] > flt["created_after"]:
        return False
    return not (
        flt.get("created_before") is not None and not m["created_at"] < flt["created_before"]
    )


def distance(metric: str, a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if metric == "cosine":
        return float(1.0 - a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))
    return float(np.linalg.norm(a64 - b64))


def assert_exact(
    hits: list[dict[str, Any]],
    records: list[dict[str, Any]],
    metric: str,
    query: np.ndarray,
    k: int,
    flt: dict[str, Any] | None,
    now: int,
) -> None:
    candidates = {m["id"]: m for m in records if matches(m, flt, now)}
    truth = {mid: distance(metric, m["embedding"], query) for mid, m in candidates.items()}
    assert len(hits) == min(k, len(candidates))
    ids = [h["memory"]["id"] for h in hits]
    assert len(set(ids)) == len(ids)
    for h in hits:
        mid, d = h["memory"]["id"], h["distance"]
        assert mid in candidates, f"{mid} does not match the filter or has expired"
        assert abs(d - truth[mid]) <= EPS
        expected_score = 1.0 - d if metric == "cosine" else 1.0 / (1.0 + d)
        assert h["score"] == pytest.approx(expected_score)
        assert "embedding" not in h["memory"]
    keys = [(h["distance"], h["memory"]["id"]) for h in hits]
    assert keys == sorted(keys)
    if hits:
        worst = hits[-1]["distance"]
        missed = [mid for mid, d in truth.items() if mid not in ids and d < worst - EPS]
        assert not missed, f"nearer memories left out: {missed}"


FILTERS: list[dict[str, Any] | None] = [
    None,
    {},
    {"agent_id": "agent1"},
    {"agent_id": "nobody"},
    {"tags_any": ["red", "ünï"]},
    {"tags_all": ["red", "green"]},
    {"tags_any": ["x y"], "tags_all": ["blue"]},
    {"metadata": {"color": "red"}},
    {"metadata": {"n": 2}},
    {"metadata": {"n": 2.0, "color": "red"}},
    {"metadata": {"flag": True}},
    {"metadata": {"flag": 1}},
    {"metadata": {"obj": {"a": 1, "b": [1, 2]}}},
    {"metadata": {"missing": None}},
    {"created_after": 10_000, "created_before": 30_000},
    {"created_before": 1_000},
    {
        "agent_id": "agent0",
        "tags_any": ["green"],
        "metadata": {"color": "blue"},
        "created_after": 5_000,
    },
    {
        "agent_id": None,
        "tags_any": [],
        "tags_all": [],
        "metadata": {},
        "created_after": None,
        "created_before": None,
    },
]


@pytest.mark.parametrize("ns,metric", [("cos", "cosine"), ("euc", "l2")])
@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: orjson.dumps(f).decode()[:40])
def test_search_is_exact(
    reader: Reader, db: tuple[str, dict[str, Any]], ns: str, metric: str, flt: dict[str, Any] | None
) -> None:
    records = db[1][ns]
    rng = np.random.default_rng(len(orjson.dumps(flt)))
    # A random query, and the duplicated vector itself (a 41-way exact tie at 0).
    queries = [rng.standard_normal(DIM).astype(np.float32), records[0]["embedding"]]
    for q in queries:
        for k in (1, 7, 60, N + 10):
            hits = reader.search(ns, q, k, flt, NOW)
            assert_exact(hits, records, metric, q, k, flt, NOW)


def test_metadata_equality_semantics(reader: Reader, db: tuple[str, dict[str, Any]]) -> None:
    q = np.ones(DIM, dtype=np.float32)
    records = db[1]["cos"]

    def ids(flt: dict[str, Any]) -> set[str]:
        return {h["memory"]["id"] for h in reader.search("cos", q, N, flt, NOW)}

    n2 = ids({"metadata": {"n": 2}})
    assert n2 == ids({"metadata": {"n": 2.0}})
    stored_float = {
        m["id"]
        for m in records
        if isinstance(m["metadata"]["n"], float)
        and m["metadata"]["n"] == 2.0
        and matches(m, None, NOW)
    }
    assert stored_float and stored_float <= n2
    assert ids({"metadata": {"flag": True}}) and not ids({"metadata": {"flag": 1}})
    assert not ids({"metadata": {"color": ["red"]}})
    assert ids({"metadata": {"obj": {"b": [1, 2], "a": 0}}})
    assert not ids({"metadata": {"obj": {"b": [2, 1], "a": 0}}})
    with pytest.raises(ValidationError):
        reader.search("cos", q, 5, {"metadata": {"n": float("nan")}}, NOW)


def test_ties_are_broken_by_id_even_past_vec0_cutoff(
    reader: Reader, db: tuple[str, dict[str, Any]]
) -> None:
    records = db[1]["euc"]
    dup = records[0]["embedding"]
    tied = sorted(
        m["id"] for m in records if np.array_equal(m["embedding"], dup) and matches(m, None, NOW)
    )
    assert len(tied) > 20
    # Without a filter, vec0 over-fetches by the expired count (here more than the
    # ties); with one it fetches k + 1, so the tie straddles its cut-off.
    for flt in (None, {"created_after": 0}):
        for k in (1, 5, 20):
            hits = reader.search("euc", dup, k, flt, NOW)
            assert [h["memory"]["id"] for h in hits] == tied[:k]
            assert all(h["distance"] == 0.0 and h["score"] == 1.0 for h in hits)


def test_fast_path_is_used_when_it_is_exact(
    reader: Reader, db: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_scan(*args: Any) -> Any:
        raise AssertionError("fell back to the full scan")

    monkeypatch.setattr(reader, "_scan", no_scan)
    q = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    for flt in (None, {"agent_id": "agent2"}, {"tags_all": ["red"]}):
        assert len(reader.search("cos", q, 10, flt, NOW)) == 10
    # A tie straddling vec0's first cut-off is settled by a wider KNN, not the scan.
    dup = db[1]["euc"][0]["embedding"]
    hits = reader.search("euc", dup, 20, {"created_after": 0}, NOW)
    assert len(hits) == 20 and all(h["distance"] == 0.0 for h in hits)


def test_k_beyond_the_vec0_limit_uses_the_scan(
    reader: Reader, db: tuple[str, dict[str, Any]]
) -> None:
    q = np.random.default_rng(4).standard_normal(DIM).astype(np.float32)
    hits = reader.search("euc", q, VEC0_MAX_K + 1, None, NOW)
    assert_exact(hits, db[1]["euc"], "l2", q, VEC0_MAX_K + 1, None, NOW)


def test_ttl_is_judged_at_the_callers_now(reader: Reader, db: tuple[str, dict[str, Any]]) -> None:
    q = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    records = db[1]["cos"]
    for now in (0, NOW - 1, NOW, NOW + 5, NOW + 100):
        assert_exact(reader.search("cos", q, N, None, now), records, "cosine", q, N, None, now)


@pytest.mark.parametrize(
    "vector,k,flt",
    [
        (np.ones(DIM + 1), 5, None),
        (np.zeros(DIM), 5, None),
        (np.full(DIM, np.nan), 5, None),
        (np.ones((2, DIM)), 5, None),
        (np.ones(DIM), 0, None),
        (np.ones(DIM), 5, {"agent": "x"}),
        (np.ones(DIM), 5, {"tags_any": "red"}),
        (np.ones(DIM), 5, {"created_after": "yesterday"}),
    ],
)
def test_bad_queries_are_validation_errors(
    reader: Reader, vector: Any, k: int, flt: dict[str, Any] | None
) -> None:
    with pytest.raises(ValidationError):
        reader.search("cos", np.asarray(vector, dtype=np.float32), k, flt, NOW)


def test_dimension_mismatch_has_its_code(reader: Reader) -> None:
    with pytest.raises(ValidationError) as info:
        reader.search("cos", np.ones(3, dtype=np.float32), 1, None, NOW)
    assert info.value.code == "dimension_mismatch"


def test_search_sees_patches_and_deletes(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with StateMachine(path) as sm, Reader(path) as r:
        cmds = [
            C.create_namespace("ns", 2, "l2", 1, None),
            C.put(
                "ns",
                {
                    "id": "a",
                    "agent_id": "x",
                    "text": "",
                    "embedding": [0.0, 0.0],
                    "expires_at": None,
                    "tags": ["t"],
                },
                2,
                None,
                None,
            ),
            C.put(
                "ns",
                {
                    "id": "b",
                    "agent_id": "x",
                    "text": "",
                    "embedding": [5.0, 0.0],
                    "expires_at": None,
                },
                2,
                None,
                None,
            ),
        ]
        for i, c in enumerate(cmds, 1):
            sm.apply(i, C.encode(c))
        q = np.array([4.0, 0.0], dtype=np.float32)
        assert [h["memory"]["id"] for h in r.search("ns", q, 2, None, 3)] == ["b", "a"]
        sm.apply(
            4,
            C.encode(
                C.patch("ns", "a", {"embedding": [4.0, 0.0], "tags": []}, None, 3, None, None)
            ),
        )
        hits = r.search("ns", q, 2, None, 4)
        assert [(h["memory"]["id"], h["distance"]) for h in hits] == [("a", 0.0), ("b", 1.0)]
        assert r.search("ns", q, 2, {"tags_any": ["t"]}, 4) == []
        sm.apply(5, C.encode(C.delete("ns", "a", None, 5, None, None)))
        assert [h["memory"]["id"] for h in r.search("ns", q, 2, None, 6)] == ["b"]
