"""Workloads for `python -m jepsen_like run`: register (a few hot keys) and kv (many keys)."""

from jepsen_like.workloads.base import WORKLOADS, Op, Workload, build

__all__ = ["WORKLOADS", "Op", "Workload", "build"]
