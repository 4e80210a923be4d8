"""Wire codec for Raft messages between nodes: explicit, tagged, never pickle.

pysyncobj hands its transport plain dicts of ``None``/bool/int/float/str/
bytes/list/tuple/dict values. Its own TCP transport pickles them, so anyone who
reaches the port can run code. This codec accepts exactly those value types
and nothing else, so a frame can at worst be rejected, never executed.

Encoding (big-endian lengths)::

    N                      None
    T / F                  True / False
    i <8 bytes signed>     int (|x| < 2**63)
    I <len:4> <ascii>      big int (decimal)
    d <8 bytes double>     float
    s <len:4> <utf-8>      str
    b <len:4> <bytes>      bytes
    l <n:4> item*n         list
    t <n:4> item*n         tuple
    m <n:4> (key item)*n   dict
"""

from __future__ import annotations

import struct
from typing import Any

_Q = struct.Struct(">q")
_D = struct.Struct(">d")
_L = struct.Struct(">I")

MAX_DEPTH = 16


class WireError(ValueError):
    """A frame that is not a valid encoding."""


def encode(value: Any) -> bytes:
    out: list[bytes] = []
    _enc(value, out, 0)
    return b"".join(out)


def _enc(v: Any, out: list[bytes], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    if v is None:
        out.append(b"N")
    elif v is True:
        out.append(b"T")
    elif v is False:
        out.append(b"F")
    elif isinstance(v, int):
        if -(2**63) <= v < 2**63:
            out.append(b"i" + _Q.pack(v))
        else:
            s = str(v).encode()
            out.append(b"I" + _L.pack(len(s)) + s)
    elif isinstance(v, float):
        out.append(b"d" + _D.pack(v))
    elif isinstance(v, str):
        s = v.encode()
        out.append(b"s" + _L.pack(len(s)) + s)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        out.append(b"b" + _L.pack(len(b)) + b)
    elif isinstance(v, (list, tuple)):
        out.append((b"l" if isinstance(v, list) else b"t") + _L.pack(len(v)))
        for item in v:
            _enc(item, out, depth + 1)
    elif isinstance(v, dict):
        out.append(b"m" + _L.pack(len(v)))
        for k, item in v.items():
            _enc(k, out, depth + 1)
            _enc(item, out, depth + 1)
    else:
        raise WireError(f"cannot encode {type(v).__name__}")


def decode(data: bytes) -> Any:
    data = bytes(data)
    try:
        value, pos = _dec(data, 0, 0)
    except (struct.error, IndexError, UnicodeDecodeError, TypeError) as e:
        raise WireError(f"malformed frame: {e}") from None
    if pos != len(data):
        raise WireError("trailing bytes in frame")
    return value


# Tag bytes as ints: indexing bytes gives ints, and comparing ints is the fast path.
_N, _T, _F, _i, _d = b"N"[0], b"T"[0], b"F"[0], b"i"[0], b"d"[0]
_I, _s, _b, _l, _t, _m = b"I"[0], b"s"[0], b"b"[0], b"l"[0], b"t"[0], b"m"[0]
_unpack_q = _Q.unpack_from
_unpack_d = _D.unpack_from
_unpack_L = _L.unpack_from


def _dec(buf: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise WireError("value nested too deeply")
    tag = buf[pos]
    pos += 1
    if tag == _i:
        if pos + 8 > len(buf):
            raise WireError("truncated frame")
        return _unpack_q(buf, pos)[0], pos + 8
    if tag == _s or tag == _b or tag == _I:
        if pos + 4 > len(buf):
            raise WireError("truncated frame")
        (n,) = _unpack_L(buf, pos)
        pos += 4
        end = pos + n
        if end > len(buf):
            raise WireError("truncated frame")
        if tag == _b:
            return buf[pos:end], end
        text = buf[pos:end].decode("utf-8")
        if tag == _I:
            if not text.lstrip("-").isdigit():
                raise WireError("bad big int")
            return int(text), end
        return text, end
    if tag == _l or tag == _t or tag == _m:
        if pos + 4 > len(buf):
            raise WireError("truncated frame")
        (n,) = _unpack_L(buf, pos)
        pos += 4
        if n > len(buf):
            raise WireError("impossible container length")
        if tag == _m:
            d: dict[Any, Any] = {}
            for _ in range(n):
                k, pos = _dec(buf, pos, depth + 1)
                if isinstance(k, (list, dict)):
                    raise WireError("unhashable key")
                d[k], pos = _dec(buf, pos, depth + 1)
            return d, pos
        items = []
        for _ in range(n):
            item, pos = _dec(buf, pos, depth + 1)
            items.append(item)
        return (items if tag == _l else tuple(items)), pos
    if tag == _N:
        return None, pos
    if tag == _T:
        return True, pos
    if tag == _F:
        return False, pos
    if tag == _d:
        if pos + 8 > len(buf):
            raise WireError("truncated frame")
        return _unpack_d(buf, pos)[0], pos + 8
    raise WireError(f"unknown tag {bytes([tag])!r}")
