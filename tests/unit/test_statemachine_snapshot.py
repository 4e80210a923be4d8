"""Snapshots: consistent copies, meta round trip, install only if newer, live readers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import pytest

from raftmem import commands as C
from raftmem.errors import CorruptionError
from raftmem.statemachine import Reader, StateMachine, read_snapshot_meta


def mem(mid: str, emb: Any, **kw: Any) -> dict[str, Any]:
    m = {
        "id": mid,
        "agent_id": "a",
        "text": mid,
        "embedding": emb,
        "expires_at": None,
        "tags": ["t"],
        "metadata": {"i": mid},
    }
    m.update(kw)
    return m


def commands(n: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    out = [C.encode(C.create_namespace("ns", 4, "cosine", 1, "create"))]
    for i in range(n):
        out.append(
            C.encode(C.put("ns", mem(f"m{i:03d}", rng.standard_normal(4)), 10 + i, f"r{i}", None))
        )
    return out


class Replica:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sm = StateMachine(self.path)

    def apply_all(self, payloads: list[bytes], upto: int | None = None) -> None:
        for i, p in enumerate(payloads[:upto], start=1):
            self.sm.apply(i, p)

    def digest(self) -> str:
        with Reader(self.path) as r:
            return r.digest()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    a, b = Replica(tmp_path / "a.db"), Replica(tmp_path / "b.db")
    yield a, b
    a.sm.close()
    b.sm.close()


def test_snapshot_file_is_self_contained_with_meta(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, _ = replicas
    a.apply_all(commands(20))
    snap = tmp_path / "snap.db"
    meta = os.urandom(1 << 16)
    a.sm.snapshot_to(str(snap), meta)
    assert read_snapshot_meta(str(snap)) == (21, meta)
    assert StateMachine.read_snapshot_meta(str(snap)) == (21, meta)
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("snap"))
    assert leftovers == ["snap.db"]  # no -wal/-shm/.tmp beside it
    # Overwriting an existing snapshot file works and replaces its meta.
    a.sm.apply(22, C.encode(C.barrier()))
    a.sm.snapshot_to(str(snap), b"second")
    assert read_snapshot_meta(str(snap)) == (22, b"second")


def test_install_newer_snapshot(replicas: tuple[Replica, Replica], tmp_path: Path) -> None:
    a, b = replicas
    payloads = commands(30)
    a.apply_all(payloads)
    b.apply_all(payloads, upto=5)
    snap = str(tmp_path / "snap.db")
    a.sm.snapshot_to(snap, b"m")
    assert b.sm.install_snapshot(snap) is True
    assert b.sm.applied_index == a.sm.applied_index == 31
    assert b.digest() == a.digest()
    # The copy's meta table does not leak into the live database.
    conn = apsw.Connection(b.path, flags=apsw.SQLITE_OPEN_READONLY)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "snapshot_meta" not in tables
    assert conn.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
    conn.close()
    # Replay continues after the snapshot: old entries skip, new ones apply.
    assert b.sm.apply(10, payloads[9]) == {"ok": True, "skipped": True}
    more = C.encode(C.put("ns", mem("new", [1.0, 0.0, 0.0, 0.0]), 100, "rn", None))
    assert b.sm.apply(32, more)["ok"] and a.sm.apply(32, more)["ok"]
    assert b.digest() == a.digest()
    # Dedup records came with the snapshot: a retried request id is answered, not re-applied.
    retry = C.encode(C.put("ns", mem("other", [1.0, 0.0, 0.0, 0.0]), 101, "r3", None))
    assert b.sm.apply(33, retry)["memory"]["id"] == "m003"


def test_install_refuses_older_or_equal_snapshot(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    payloads = commands(20)
    a.apply_all(payloads, upto=10)
    old = str(tmp_path / "old.db")
    a.sm.snapshot_to(old, b"old")
    a.apply_all(payloads)
    same = str(tmp_path / "same.db")
    a.sm.snapshot_to(same, b"same")
    b.apply_all(payloads)
    before = b.digest()
    # A follower that is ahead (design §3 defect 1) keeps its state.
    assert b.sm.install_snapshot(old) is False
    assert b.sm.install_snapshot(same) is False
    assert b.sm.applied_index == 21 and b.digest() == before
    with Reader(b.path) as r:
        assert r.applied_index() == 21


def test_install_while_readers_are_open(replicas: tuple[Replica, Replica], tmp_path: Path) -> None:
    a, b = replicas
    payloads = commands(15)
    a.apply_all(payloads)
    assert a.sm.apply(17, C.encode(C.create_namespace("second", 2, "l2", 50, None)))["ok"]
    assert a.sm.apply(18, C.encode(C.put("second", mem("s", [1.0, 1.0]), 60, None, None)))["ok"]
    snap = str(tmp_path / "snap.db")
    a.sm.snapshot_to(snap, b"")
    b.apply_all(payloads, upto=3)
    idle = Reader(b.path)
    pinned = Reader(b.path)
    q = np.ones(4, dtype=np.float32)
    assert len(idle.search("ns", q, 50, None, 100)) == 2
    with pinned.transaction():
        assert pinned.count() == 2
        assert b.sm.install_snapshot(snap)
        # A reader inside a transaction keeps the state it started with ...
        assert pinned.count() == 2 and pinned.applied_index() == 3
    # ... and sees the installed state from its next transaction.
    assert pinned.count() == 16 and pinned.applied_index() == 18
    assert len(idle.search("ns", q, 50, None, 100)) == 15
    hits = idle.search("second", np.array([1.0, 1.0], dtype=np.float32), 1, None, 100)
    assert hits[0]["memory"]["id"] == "s"
    assert idle.digest() == a.digest()
    idle.close()
    pinned.close()


def test_snapshot_survives_reopen_of_the_installed_db(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    a.apply_all(commands(10))
    snap = str(tmp_path / "snap.db")
    a.sm.snapshot_to(snap, b"")
    assert b.sm.install_snapshot(snap)
    b.sm.close()
    b.sm = StateMachine(b.path)
    assert b.sm.applied_index == 11
    assert b.digest() == a.digest()


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100])
def test_garbage_snapshot_is_corruption(
    replicas: tuple[Replica, Replica], tmp_path: Path, content: bytes
) -> None:
    _, b = replicas
    b.apply_all(commands(3))
    before = b.digest()
    bad = tmp_path / "bad.db"
    bad.write_bytes(content)
    with pytest.raises(CorruptionError):
        read_snapshot_meta(str(bad))
    with pytest.raises(CorruptionError):
        b.sm.install_snapshot(str(bad))
    assert b.sm.applied_index == 4 and b.digest() == before


def test_a_plain_database_is_not_a_snapshot(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    a.apply_all(commands(3))
    with pytest.raises(CorruptionError):
        b.sm.install_snapshot(a.path)  # a live db has no snapshot meta
    with pytest.raises(CorruptionError):
        read_snapshot_meta(str(tmp_path / "missing.db"))


def test_snapshot_taken_concurrently_with_applies_is_installable(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    """snapshot_to reads through its own connection: a copy made on another thread
    while applies continue holds some committed state, and installing it then
    replaying the whole log converges (entries it already holds are skipped)."""
    from concurrent.futures import ThreadPoolExecutor

    a, b = replicas
    payloads = commands(300)
    a.apply_all(payloads, upto=100)
    snap = str(tmp_path / "snap.db")
    with ThreadPoolExecutor(1) as pool:
        copying = pool.submit(a.sm.snapshot_to, snap, b"meta")
        for i, p in enumerate(payloads[100:], start=101):
            a.sm.apply(i, p)
        copying.result(timeout=30)  # re-raises anything the copy raised
    snap_index, _ = read_snapshot_meta(snap)
    assert 100 <= snap_index <= len(payloads)
    assert b.sm.install_snapshot(snap)
    with Reader(b.path) as r:
        assert r.count() == snap_index - 1  # one entry created the namespace
    b.apply_all(payloads)
    assert b.digest() == a.digest()
