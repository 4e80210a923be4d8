"""Session tokens: the Raft index of each group that a client has seen (pure).

A token is opaque to clients: ``s1.`` + base64url(JSON ``{group: index}``).
Every write returns one covering the write's entry; every read returns one
covering the state it read. A session read is served by any replica that has
applied at least the token's index for the group it reads.
"""

from __future__ import annotations

import base64
import binascii

import orjson

from raftmem.errors import ValidationError

PREFIX = "s1."
MAX_TOKEN = 4096


def encode(indexes: dict[int, int]) -> str:
    body = orjson.dumps({str(g): int(i) for g, i in sorted(indexes.items())})
    return PREFIX + base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode(token: str | None) -> dict[int, int]:
    if not token:
        return {}
    if len(token) > MAX_TOKEN or not token.startswith(PREFIX):
        raise ValidationError("malformed session token", code="invalid_session", field="Raftmem-Session")
    raw = token[len(PREFIX):]
    try:
        data = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        out = {int(g): int(i) for g, i in data.items()}
    except (binascii.Error, ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
        raise ValidationError("malformed session token", code="invalid_session",
                              field="Raftmem-Session") from None
    if any(i < 0 for i in out.values()):
        raise ValidationError("malformed session token", code="invalid_session", field="Raftmem-Session")
    return out


def merge(a: dict[int, int], b: dict[int, int]) -> dict[int, int]:
    out = dict(a)
    for g, i in b.items():
        if i > out.get(g, -1):
            out[g] = i
    return out
