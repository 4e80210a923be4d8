"""Deterministic apply over SQLite + sqlite-vec, queries and snapshots (see DESIGN.md)."""

from raftmem.statemachine.machine import StateMachine
from raftmem.statemachine.reader import Reader
from raftmem.statemachine.snapshot import read_meta as read_snapshot_meta

__all__ = ["Reader", "StateMachine", "read_snapshot_meta"]
