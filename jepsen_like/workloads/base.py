"""A workload is {client, generator, model}: what operations to run and how to check them.

The generator is pure given its random source and what its process has seen:

* written values are unique (one counter for the run), so a read names the
  exact write it saw: a stale read cannot hide behind an equal value, and the
  checker's search stays small;
* a cas expects the value its process saw last on that key (so it often
  succeeds) and sets a fresh value.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

from jepsen_like.workloads.client import DIM, NAMESPACE, RegisterClient


@dataclass(frozen=True, slots=True)
class Op:
    f: str  # read, write, cas
    key: str  # the memory id
    value: Any  # read: None; write: v; cas: [expected, new]


@dataclass
class Generator:
    keys: list[str]
    mix: dict[str, float]
    _values: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_op(self, rng: random.Random, seen: dict[str, Any]) -> Op:
        key = rng.choice(self.keys)
        f = rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        if f == "read":
            return Op("read", key, None)
        if f == "cas" and key in seen:
            return Op("cas", key, [seen[key], next(self._values)])
        return Op("write", key, next(self._values))


@dataclass
class Workload:
    """What the runner needs from a workload."""

    name: str
    model: str  # history model: cas-register (one key) or kv
    keys: list[str]  # memory ids
    generator: Generator
    precreate: bool  # create every key (value None) before recording starts
    namespace: str = NAMESPACE

    def history_key(self, key: str) -> str | None:
        return None if self.model == "cas-register" else key

    async def setup(self, client: RegisterClient) -> None:
        """Create the namespace and, for pre-created keys, every key with the value None."""
        reply = await client.api.request(
            "PUT", f"{client.base}/v1/namespaces/{self.namespace}", {"dim": DIM, "metric": "l2"}
        )
        if reply.status not in (200, 201):
            raise SetupError(f"PUT namespace {self.namespace}: {reply.describe()} {reply.body}")
        if self.precreate:
            for key in self.keys:
                r = await client.setup_key(key, None)
                if not r.ok:
                    raise SetupError(f"create key {key}: {r.describe()} {r.body}")


class SetupError(RuntimeError):
    pass


REGISTER_MIX = {"read": 0.5, "write": 0.25, "cas": 0.25}
KV_MIX = {"read": 0.5, "write": 0.3, "cas": 0.2}


def register(keys: int) -> Workload:
    """A few hot, pre-created registers: every process contends on every key."""
    ids = [f"r{i}" for i in range(keys)]
    return Workload(
        "register",
        "cas-register" if keys == 1 else "kv",
        ids,
        Generator(ids, REGISTER_MIX),
        precreate=True,
    )


def kv(keys: int) -> Workload:
    """Many keys that start absent and are created by their first write; spread over all groups."""
    ids = [f"k{i}" for i in range(keys)]
    return Workload("kv", "kv", ids, Generator(ids, KV_MIX), precreate=False)


WORKLOADS = {"register": (register, 3), "kv": (kv, 64)}  # name -> (factory, default keys)


def build(name: str, keys: int | None) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    factory, default = WORKLOADS[name]
    return factory(keys if keys is not None else default)
