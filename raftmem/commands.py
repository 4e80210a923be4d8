"""The command codec: what a Raft log entry's payload is, byte for byte.

Wire format (version 1)::

    b"\\x01" + orjson(command object)

``command["op"]`` selects the shape (see ``REQUIRED_KEYS``). Embeddings travel
as base64 of little-endian float32 (:func:`pack_vector`), 4 bytes a dimension
instead of ~20 for a JSON float. :func:`decode` returns embeddings as read-only
``np.float32`` arrays; :func:`encode` accepts arrays or lists of floats.

Two layers of checking, on purpose:

* :func:`decode` checks only what the *codec* guarantees: magic byte, JSON
  object, a known ``op`` and exactly its top-level keys, decodable embeddings.
  Anything else raises :class:`CorruptionError`: the bytes are not something
  our builders produce, so the replica fail-stops rather than guess.
* Field *values* (types, dimensions, non-finite floats, unknown memory keys)
  are user-level: the builders below reject them at proposal time with a
  definite :class:`ValidationError`, and the state machine re-checks them and
  answers ``invalid_request`` as a result. A bad value that slips into the log
  must not be a poison pill that halts every replica of a group.

Builders are pure: every non-deterministic value (ids, timestamps, expiry
deadlines) is chosen by the caller and carried in the command. New semantics
get a new ``op`` or a new version byte, never a silently ignored key: unknown
top-level keys are corruption, so mixed-version replicas stop instead of
diverging.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from raftmem.errors import CorruptionError, ValidationError
from raftmem.keyspace import Ownership, format_point
from raftmem.types import METRICS

VERSION = b"\x01"

# sqlite-vec's own ceiling for vec0 float columns.
MAX_DIM = 8192

REQUIRED_KEYS: dict[str, frozenset[str]] = {
    "create_namespace": frozenset({"op", "ns", "dim", "metric", "ts", "request_id"}),
    "put": frozenset({"op", "ns", "memory", "ts", "request_id", "epoch"}),
    "put_batch": frozenset({"op", "ns", "memories", "ts", "request_id", "epoch"}),
    "patch": frozenset({"op", "ns", "id", "fields", "if_version", "ts", "request_id", "epoch"}),
    "delete": frozenset({"op", "ns", "id", "if_version", "ts", "request_id", "epoch"}),
    "purge": frozenset({"op", "now", "dedup_before"}),
    "barrier": frozenset({"op"}),
    "set_ownership": frozenset({"op", "ownership"}),
    # Range moves (raftmem/statemachine/ranges.py); bounds as format_point strings.
    "range_freeze": frozenset({"op", "start", "end", "move", "frozen"}),
    "range_stage": frozenset({"op", "start", "end", "move", "namespaces", "rows", "requests"}),
    "range_release": frozenset({"op", "start", "end", "move", "version"}),
    "range_activate": frozenset({"op", "start", "end", "move", "version"}),
}

MEMORY_KEYS = frozenset({"id", "agent_id", "text", "embedding", "metadata", "tags", "expires_at"})
MEMORY_REQUIRED = frozenset({"id", "agent_id", "text", "embedding", "expires_at"})
PATCH_FIELDS = frozenset({"text", "embedding", "metadata", "tags", "agent_id", "expires_at"})

Vector = Sequence[float] | np.ndarray


# --- vectors -----------------------------------------------------------------


def pack_vector(vec: Vector) -> str:
    """base64 of little-endian float32; the one wire form of an embedding."""
    arr = np.asarray(vec, dtype="<f4")
    if arr.ndim != 1:
        raise ValidationError("embedding must be a flat list of numbers")
    return base64.b64encode(arr.tobytes()).decode("ascii")


def unpack_vector(text: str) -> np.ndarray:
    """Inverse of :func:`pack_vector`; raises CorruptionError on anything else."""
    if not isinstance(text, str):
        raise CorruptionError("embedding is not a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CorruptionError(f"embedding is not valid base64: {exc}") from exc
    if len(raw) % 4:
        raise CorruptionError("embedding length is not a multiple of 4 bytes")
    arr = np.frombuffer(raw, dtype="<f4")
    arr.flags.writeable = False
    return arr


def as_vector(vec: Any) -> np.ndarray:
    """Normalise a caller's embedding to a 1-D float32 array (ValidationError if impossible)."""
    if isinstance(vec, (str, bytes)) or vec is None:
        raise ValidationError("embedding must be a list of numbers")
    try:
        arr = np.asarray(vec, dtype="<f4")
    except (TypeError, ValueError) as exc:
        raise ValidationError("embedding must be a list of numbers") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise ValidationError("embedding must be a non-empty flat list of numbers")
    return arr


# --- value checks shared by the builders and the state machine ----------------
#
# Each returns an error message or None, so the builders can raise and the
# state machine can answer the same words as an ``invalid_request`` result.


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_vector(vec: Any, metric: str | None = None) -> str | None:
    """Values of an embedding; its dimension is checked against the namespace separately."""
    if not isinstance(vec, np.ndarray) or vec.dtype != np.dtype("<f4") or vec.ndim != 1:
        return "embedding must be a float32 vector"
    if not bool(np.isfinite(vec).all()):
        return "embedding contains NaN or infinity"
    if metric == "cosine" and not bool(np.any(vec)):
        return "a zero vector has no cosine distance"
    return None


def check_namespace_def(ns: Any, dim: Any, metric: Any) -> str | None:
    if not isinstance(ns, str) or not ns:
        return "namespace must be a non-empty string"
    if not _is_int(dim) or not 1 <= dim <= MAX_DIM:
        return f"dim must be an integer in 1..{MAX_DIM}"
    if metric not in METRICS:
        return f"metric must be one of {', '.join(METRICS)}"
    return None


def _check_common(fields: Mapping[str, Any]) -> str | None:
    if "agent_id" in fields and not isinstance(fields["agent_id"], str):
        return "agent_id must be a string"
    if "text" in fields and not isinstance(fields["text"], str):
        return "text must be a string"
    if "metadata" in fields:
        md = fields["metadata"]
        if not isinstance(md, dict) or not all(isinstance(k, str) for k in md):
            return "metadata must be an object"
    if "tags" in fields:
        tags = fields["tags"]
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return "tags must be a list of strings"
    expires_at = fields.get("expires_at")
    if expires_at is not None and not _is_int(expires_at):
        return "expires_at must be an integer (epoch ms) or null"
    return None


def check_memory(mem: Any) -> str | None:
    """Shape of a memory inside put / put_batch (the embedding is checked by the caller)."""
    if not isinstance(mem, dict):
        return "memory must be an object"
    unknown = set(mem) - MEMORY_KEYS
    if unknown:
        return f"unknown memory fields: {', '.join(sorted(unknown))}"
    missing = MEMORY_REQUIRED - set(mem)
    if missing:
        return f"missing memory fields: {', '.join(sorted(missing))}"
    if not isinstance(mem["id"], str) or not mem["id"]:
        return "id must be a non-empty string"
    return _check_common(mem)


def check_patch_fields(fields: Any) -> str | None:
    if not isinstance(fields, dict):
        return "fields must be an object"
    unknown = set(fields) - PATCH_FIELDS
    if unknown:
        return f"unknown patch fields: {', '.join(sorted(unknown))}"
    return _check_common(fields)


# --- codec ---------------------------------------------------------------------


def _packed(cmd: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``cmd`` whose embeddings are base64 strings."""
    out = dict(cmd)
    op = cmd.get("op")
    if op == "put":
        out["memory"] = _pack_embedding_in(cmd["memory"])
    elif op == "put_batch":
        out["memories"] = [_pack_embedding_in(m) for m in cmd["memories"]]
    elif op == "patch":
        out["fields"] = _pack_embedding_in(cmd["fields"])
    return out


def _pack_embedding_in(obj: Any) -> Any:
    if isinstance(obj, Mapping) and "embedding" in obj and not isinstance(obj["embedding"], str):
        copy = dict(obj)
        copy["embedding"] = pack_vector(as_vector(obj["embedding"]))
        return copy
    return obj


def encode(cmd: Mapping[str, Any]) -> bytes:
    """Serialise a command (as built by the helpers below) to a log payload."""
    op = cmd.get("op")
    if op not in REQUIRED_KEYS:
        raise ValidationError(f"unknown command op: {op!r}")
    if set(cmd) != REQUIRED_KEYS[op]:
        raise ValidationError(
            f"command {op} must have exactly the keys {sorted(REQUIRED_KEYS[op])}"
        )
    try:
        # Sorted keys: one command, one byte string (handy for tests and digests).
        body = orjson.dumps(_packed(cmd), option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise ValidationError(f"command is not JSON-serialisable: {exc}") from exc
    return VERSION + body


def _unpack_embedding_in(obj: Any) -> None:
    if isinstance(obj, dict) and "embedding" in obj:
        obj["embedding"] = unpack_vector(obj["embedding"])


def decode(payload: bytes) -> dict[str, Any]:
    """Parse a log payload; embeddings come back as read-only float32 arrays.

    Raises :class:`CorruptionError` for anything :func:`encode` cannot produce.
    """
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CorruptionError(f"payload must be bytes, not {type(payload).__name__}")
    data = bytes(payload)
    if data[:1] != VERSION:
        raise CorruptionError(f"unknown payload version byte {data[:1]!r}")
    try:
        cmd = orjson.loads(data[1:])
    except orjson.JSONDecodeError as exc:
        raise CorruptionError(f"payload is not JSON: {exc}") from exc
    if not isinstance(cmd, dict):
        raise CorruptionError("payload is not a JSON object")
    op = cmd.get("op")
    if not isinstance(op, str) or op not in REQUIRED_KEYS:
        raise CorruptionError(f"unknown command op: {op!r}")
    if set(cmd) != REQUIRED_KEYS[op]:
        raise CorruptionError(f"command {op} has keys {sorted(cmd)}")
    if op == "put":
        _unpack_embedding_in(cmd["memory"])
    elif op == "put_batch":
        if not isinstance(cmd["memories"], list):
            raise CorruptionError("put_batch memories is not a list")
        for mem in cmd["memories"]:
            _unpack_embedding_in(mem)
    elif op == "patch":
        _unpack_embedding_in(cmd["fields"])
    return cmd


# --- builders ------------------------------------------------------------------


def _check_ts(name: str, value: Any) -> int:
    if not _is_int(value):
        raise ValidationError(f"{name} must be an integer (epoch ms)")
    return int(value)


def _check_request_id(request_id: Any) -> str | None:
    if request_id is not None and (not isinstance(request_id, str) or not request_id):
        raise ValidationError("request_id must be a non-empty string or null")
    return request_id  # type: ignore[no-any-return]


def _check_epoch(epoch: Any) -> list[int] | None:
    if epoch is None:
        return None
    if isinstance(epoch, (list, tuple)) and len(epoch) == 2 and all(_is_int(e) for e in epoch):
        return [int(epoch[0]), int(epoch[1])]
    raise ValidationError("epoch must be a [version, conf_ver] pair of integers")


def _check_ns(ns: Any) -> str:
    if not isinstance(ns, str) or not ns:
        raise ValidationError("namespace must be a non-empty string")
    return ns


def _check_if_version(if_version: Any) -> int | None:
    if if_version is not None and not _is_int(if_version):
        raise ValidationError("if_version must be an integer or null")
    return if_version  # type: ignore[no-any-return]


def _normalise_memory(memory: Mapping[str, Any]) -> dict[str, Any]:
    mem = dict(memory)
    mem.setdefault("metadata", {})
    mem.setdefault("tags", [])
    err = check_memory(mem)
    if err:
        raise ValidationError(err)
    mem["embedding"] = as_vector(mem["embedding"])
    err = check_vector(mem["embedding"])
    if err:
        raise ValidationError(err)
    return mem


def create_namespace(
    ns: str, dim: int, metric: str, ts: int, request_id: str | None
) -> dict[str, Any]:
    err = check_namespace_def(ns, dim, metric)
    if err:
        raise ValidationError(err)
    return {
        "op": "create_namespace",
        "ns": ns,
        "dim": dim,
        "metric": metric,
        "ts": _check_ts("ts", ts),
        "request_id": _check_request_id(request_id),
    }


def put(
    ns: str,
    memory: Mapping[str, Any],
    ts: int,
    request_id: str | None,
    epoch: Sequence[int] | None,
) -> dict[str, Any]:
    """``memory``: id, agent_id, text, embedding, expires_at (absolute ms or None), and
    optional metadata (default {}) and tags (default []). Create-only: an existing live
    id is ``already_exists``."""
    return {
        "op": "put",
        "ns": _check_ns(ns),
        "memory": _normalise_memory(memory),
        "ts": _check_ts("ts", ts),
        "request_id": _check_request_id(request_id),
        "epoch": _check_epoch(epoch),
    }


def put_batch(
    ns: str,
    memories: Sequence[Mapping[str, Any]],
    ts: int,
    request_id: str | None,
    epoch: Sequence[int] | None,
) -> dict[str, Any]:
    if isinstance(memories, (str, bytes, Mapping)) or not isinstance(memories, Sequence):
        raise ValidationError("memories must be a list")
    return {
        "op": "put_batch",
        "ns": _check_ns(ns),
        "memories": [_normalise_memory(m) for m in memories],
        "ts": _check_ts("ts", ts),
        "request_id": _check_request_id(request_id),
        "epoch": _check_epoch(epoch),
    }


def patch(
    ns: str,
    id: str,
    fields: Mapping[str, Any],
    if_version: int | None,
    ts: int,
    request_id: str | None,
    epoch: Sequence[int] | None,
) -> dict[str, Any]:
    """Each given field replaces the stored one wholesale (metadata is not merged)."""
    if not isinstance(id, str) or not id:
        raise ValidationError("id must be a non-empty string")
    f = dict(fields)
    err = check_patch_fields(f)
    if err:
        raise ValidationError(err)
    if "embedding" in f:
        f["embedding"] = as_vector(f["embedding"])
        err = check_vector(f["embedding"])
        if err:
            raise ValidationError(err)
    return {
        "op": "patch",
        "ns": _check_ns(ns),
        "id": id,
        "fields": f,
        "if_version": _check_if_version(if_version),
        "ts": _check_ts("ts", ts),
        "request_id": _check_request_id(request_id),
        "epoch": _check_epoch(epoch),
    }


def delete(
    ns: str,
    id: str,
    if_version: int | None,
    ts: int,
    request_id: str | None,
    epoch: Sequence[int] | None,
) -> dict[str, Any]:
    if not isinstance(id, str) or not id:
        raise ValidationError("id must be a non-empty string")
    return {
        "op": "delete",
        "ns": _check_ns(ns),
        "id": id,
        "if_version": _check_if_version(if_version),
        "ts": _check_ts("ts", ts),
        "request_id": _check_request_id(request_id),
        "epoch": _check_epoch(epoch),
    }


def purge(now_ms: int, dedup_before_ms: int) -> dict[str, Any]:
    """Drop memories with expires_at <= now_ms and request records older than dedup_before_ms."""
    return {
        "op": "purge",
        "now": _check_ts("now_ms", now_ms),
        "dedup_before": _check_ts("dedup_before_ms", dedup_before_ms),
    }


def barrier() -> dict[str, Any]:
    """A no-op entry: once applied, everything committed before it is applied too."""
    return {"op": "barrier"}


def set_ownership(ownership: Ownership) -> dict[str, Any]:
    """Record what this group owns from now on (the placement driver's decision).

    Applied only if its epoch is newer than the group's current one (the same
    record again is a no-op); an older or conflicting one is refused with
    ``epoch_mismatch``. The state machine then refuses writes outside it.
    """
    why = ownership.problem()
    if why:
        raise ValidationError(why)
    return {"op": "set_ownership", "ownership": ownership.to_dict()}


def range_freeze(start: int, end: int, move: str, frozen: bool = True) -> dict[str, Any]:
    """Freeze (or thaw) writes to [start, end) on the group that owns it."""
    return {"op": "range_freeze", "start": format_point(start), "end": format_point(end),
            "move": move, "frozen": frozen}


def range_stage(start: int, end: int, move: str, namespaces: Sequence[Mapping[str, Any]],
                rows: Sequence[Mapping[str, Any]],
                requests: Sequence[Sequence[Any]] = ()) -> dict[str, Any]:
    """A chunk of a moving range's memories (embeddings packed) and dedup records
    (``[request_id, result, ts, point]``), kept by the new owner."""
    return {"op": "range_stage", "start": format_point(start), "end": format_point(end),
            "move": move, "namespaces": list(namespaces), "rows": list(rows),
            "requests": [list(r) for r in requests]}


def range_release(start: int, end: int, move: str, version: int) -> dict[str, Any]:
    """The old owner gives the frozen range up at table version ``version``."""
    return {"op": "range_release", "start": format_point(start), "end": format_point(end),
            "move": move, "version": version}


def range_activate(start: int, end: int, move: str, version: int) -> dict[str, Any]:
    """The new owner serves the staged memories and owns the range at ``version``."""
    return {"op": "range_activate", "start": format_point(start), "end": format_point(end),
            "move": move, "version": version}
