"""The command codec: round trips, builders' validation, malformed payloads."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftmem import commands as C
from raftmem.errors import CorruptionError, ValidationError


def memory(mid: str = "m1", emb: Any = (0.5, -1.0, 2.0), **kw: Any) -> dict[str, Any]:
    m = {"id": mid, "agent_id": "a", "text": "t", "embedding": list(emb), "expires_at": None}
    m.update(kw)
    return m


def same(a: Any, b: Any) -> bool:
    """Equality that treats float32 arrays and lists of the same floats as equal."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a, dtype="<f4"), np.asarray(b, dtype="<f4"))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


ALL_COMMANDS = [
    C.create_namespace("ns", 3, "cosine", 10, "r0"),
    C.create_namespace("ns", 3, "l2", 10, None),
    C.put("ns", memory(metadata={"k": [1, {"x": None}]}, tags=["a", "b"]), 11, "r1", [1, 2]),
    C.put("ns", memory(expires_at=99), 11, None, None),
    C.put_batch("ns", [memory("a"), memory("b", (1, 2, 3))], 12, "r2", (3, 4)),
    C.put_batch("ns", [], 12, "r3", None),
    C.patch("ns", "m1", {"text": "x", "embedding": np.ones(3)}, 4, 13, "r4", [1, 1]),
    C.patch("ns", "m1", {}, None, 13, None, None),
    C.delete("ns", "m1", 2, 14, "r5", [1, 1]),
    C.delete("ns", "m1", None, 14, None, None),
    C.purge(100, 50),
    C.barrier(),
]


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=lambda c: c["op"])
def test_round_trip(cmd: dict[str, Any]) -> None:
    payload = C.encode(cmd)
    assert payload[:1] == b"\x01"
    decoded = C.decode(payload)
    assert same(decoded, cmd)
    # Deterministic bytes: re-encoding the decoded command gives the same payload.
    assert C.encode(decoded) == payload


def test_embeddings_are_compact_float32_base64() -> None:
    cmd = C.put("ns", memory(emb=[0.1] * 384), 1, None, None)
    body = orjson.loads(C.encode(cmd)[1:])
    raw = base64.b64decode(body["memory"]["embedding"])
    assert raw == np.full(384, 0.1, dtype="<f4").tobytes()
    decoded = C.decode(C.encode(cmd))["memory"]["embedding"]
    assert decoded.dtype == np.dtype("<f4") and decoded.shape == (384,)
    assert not decoded.flags.writeable


@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=64))
def test_pack_unpack_vector(values: list[float]) -> None:
    out = C.unpack_vector(C.pack_vector(values))
    assert np.array_equal(out, np.asarray(values, dtype="<f4"))


MALFORMED = [
    b"",
    b"\x00{}",
    b"\x02" + orjson.dumps({"op": "barrier"}),
    b"\x01",
    b"\x01not json",
    b"\x01[1, 2]",
    b"\x01{}",
    b'\x01{"op": "drop_table"}',
    b'\x01{"op": 7}',
    b'\x01{"op": "barrier", "extra": 1}',
    b'\x01{"op": "purge", "now": 1}',
    (
        b'\x01{"op": "put", "ns": "n", "ts": 1, "request_id": null, "epoch": null,'
        b' "memory": {"id": "x", "embedding": [1.0, 2.0]}}'
    ),
    (
        b'\x01{"op": "put", "ns": "n", "ts": 1, "request_id": null, "epoch": null,'
        b' "memory": {"id": "x", "embedding": "!!not base64!!"}}'
    ),
    (
        b'\x01{"op": "put", "ns": "n", "ts": 1, "request_id": null, "epoch": null,'
        b' "memory": {"id": "x", "embedding": "AAA="}}'
    ),
    (
        b'\x01{"op": "put_batch", "ns": "n", "ts": 1, "request_id": null, "epoch": null,'
        b' "memories": {"id": "x"}}'
    ),
]


@pytest.mark.parametrize("payload", MALFORMED)
def test_malformed_payloads_are_corruption(payload: bytes) -> None:
    with pytest.raises(CorruptionError):
        C.decode(payload)


def test_non_bytes_payload_is_corruption() -> None:
    with pytest.raises(CorruptionError):
        C.decode("\x01{}")  # type: ignore[arg-type]


@given(st.binary(max_size=64))
def test_random_bytes_never_raise_anything_but_corruption(payload: bytes) -> None:
    try:
        C.decode(payload)
    except CorruptionError:
        pass


@pytest.mark.parametrize(
    "build",
    [
        lambda: C.create_namespace("", 3, "cosine", 1, None),
        lambda: C.create_namespace("ns", 0, "cosine", 1, None),
        lambda: C.create_namespace("ns", True, "cosine", 1, None),
        lambda: C.create_namespace("ns", 3, "dot", 1, None),
        lambda: C.create_namespace("ns", 3, "l2", 1.5, None),  # type: ignore[arg-type]
        lambda: C.put("ns", memory(ttl_s=5), 1, None, None),
        lambda: C.put(
            "ns", {"id": "x", "agent_id": "a", "text": "t", "embedding": [1.0]}, 1, None, None
        ),
        lambda: C.put("ns", memory(""), 1, None, None),
        lambda: C.put("ns", memory(emb=[]), 1, None, None),
        lambda: C.put("ns", memory(emb=[[1.0, 2.0]]), 1, None, None),
        lambda: C.put("ns", memory(emb=[float("nan")]), 1, None, None),
        lambda: C.put("ns", memory(emb="abc"), 1, None, None),
        lambda: C.put("ns", memory(tags="a"), 1, None, None),
        lambda: C.put("ns", memory(metadata=[1]), 1, None, None),
        lambda: C.put("ns", memory(expires_at=1.5), 1, None, None),
        lambda: C.put("ns", memory(), 1, "", None),
        lambda: C.put("ns", memory(), 1, None, [1]),
        lambda: C.put_batch("ns", memory(), 1, None, None),  # type: ignore[arg-type]
        lambda: C.patch("ns", "x", {"version": 3}, None, 1, None, None),
        lambda: C.patch("ns", "x", {"text": 3}, None, 1, None, None),
        lambda: C.patch("ns", "x", {}, "3", 1, None, None),  # type: ignore[arg-type]
        lambda: C.delete("ns", "", None, 1, None, None),
        lambda: C.purge(1, None),  # type: ignore[arg-type]
    ],
)
def test_builders_reject_bad_values(build: Any) -> None:
    with pytest.raises(ValidationError):
        build()


def test_put_fills_defaults_and_keeps_caller_values() -> None:
    cmd = C.put("ns", memory(expires_at=1234), 1000, "rid", (7, 8))
    assert cmd["memory"]["metadata"] == {} and cmd["memory"]["tags"] == []
    assert cmd["memory"]["expires_at"] == 1234
    assert cmd["epoch"] == [7, 8] and cmd["request_id"] == "rid" and cmd["ts"] == 1000


def test_encode_rejects_unknown_shapes() -> None:
    with pytest.raises(ValidationError):
        C.encode({"op": "nope"})
    with pytest.raises(ValidationError):
        C.encode({"op": "barrier", "x": 1})
