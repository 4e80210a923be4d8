"""Consistent hashing of routing keys onto a 64-bit ring. Pure: no I/O, no clock."""

from __future__ import annotations

import hashlib

RING_SIZE = 1 << 64


def hash_key(namespace: str, memory_id: str) -> int:
    """A stable 64-bit hash of the routing key ``namespace/memory_id``.

    blake2b is in the standard library, fast, and identical on every platform
    and Python version (unlike ``hash()``, which is salted per process).
    """
    digest = hashlib.blake2b(f"{namespace}/{memory_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def even_splits(n: int) -> list[int]:
    """Start points of ``n`` equal ranges covering the ring."""
    if n < 1:
        raise ValueError("need at least one range")
    return [i * (RING_SIZE // n) for i in range(n)]
