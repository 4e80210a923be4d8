"""Consistent hashing of routing keys onto a 64-bit ring. Pure: no I/O, no clock.

The hash itself lives in :mod:`raftmem.keyspace`, below the state machine too,
so that the router and the group that checks ownership hash a key identically.
"""

from __future__ import annotations

from raftmem.keyspace import RING_SIZE, even_splits, hash_key

__all__ = ["RING_SIZE", "even_splits", "hash_key"]
