from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftmem.shardgroups import wire

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=5),
    max_leaves=30,
)


@given(values)
def test_round_trip(v: object) -> None:
    assert wire.decode(wire.encode(v)) == v


def test_raft_message_shapes_round_trip() -> None:
    msg = {"type": "append_entries", "term": 7, "commit_index": 41, "prevLogIdx": 40, "prevLogTerm": 6,
           "entries": [(b"\x00payload", 41, 7), (b"\x01", 42, 7)]}
    out = wire.decode(wire.encode(msg))
    assert out == msg and isinstance(out["entries"][0], tuple)
    snap = {"type": "append_entries", "serialized": (b"chunk", True, False), "term": 1, "commit_index": 3}
    assert wire.decode(wire.encode(snap)) == snap


def test_refuses_foreign_objects() -> None:
    class Evil:
        pass

    with pytest.raises(wire.WireError):
        wire.encode({"x": Evil()})


@pytest.mark.parametrize("frame", [
    b"", b"Z", b"s\x00\x00\x00\x10abc", b"l\xff\xff\xff\xff", b"NN", pickle.dumps({"a": 1}),
    b"m\x00\x00\x00\x01l\x00\x00\x00\x00N",
])
def test_malformed_frames_are_rejected_not_executed(frame: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(frame)


def test_deep_nesting_is_bounded() -> None:
    v: object = 1
    for _ in range(wire.MAX_DEPTH + 2):
        v = [v]
    with pytest.raises(wire.WireError):
        wire.encode(v)
    with pytest.raises(wire.WireError):
        wire.decode(b"l\x00\x00\x00\x01" * (wire.MAX_DEPTH + 2) + b"N")
