"""A workload is {client, generator, model}: what operations to run and how to check them.

The generator is pure given its random source and what its process has seen:

* written values are unique (one counter for the run), so a read names the
  exact write it saw: a stale read cannot hide behind an equal value, and the
  checker's search stays small;
* a cas expects the value its process saw last on that key (so it often
  succeeds) and sets a fresh value.

A workload hands each client its generator (`generator_for`): the register
and kv generators are shared (they keep nothing per client but `seen`), the
session generator keeps each client's own key and what it did last.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from jepsen_like.workloads.client import DIM, NAMESPACE, RegisterClient


@dataclass(frozen=True, slots=True)
class Op:
    f: str  # read, write, cas
    key: str  # the memory id
    value: Any  # read: None; write: v; cas: [expected, new]


class OpSource(Protocol):
    def next_op(self, rng: random.Random, seen: dict[str, Any]) -> Op: ...


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
class WriteThenRead:
    """One client of the session workload: it reads back every write at once.

    After a write (whatever its outcome) the next operation reads the same key:
    that read-your-writes check is the one a session tier can get wrong most
    easily, because the runner sends session reads to another node than the
    write (docs/jepsen.md). Otherwise: write the client's own key (60 %), read
    it (20 %) or read a random key of the workload (20 %: monotonic reads of
    keys that other sessions write).
    """

    own: str
    keys: list[str]
    values: itertools.count[int]
    _last_write: str | None = None

    def next_op(self, rng: random.Random, seen: dict[str, Any]) -> Op:
        if self._last_write is not None:
            key, self._last_write = self._last_write, None
            return Op("read", key, None)
        r = rng.random()
        if r < 0.6:
            self._last_write = self.own
            return Op("write", self.own, next(self.values))
        if r < 0.8:
            return Op("read", self.own, None)
        return Op("read", rng.choice(self.keys), None)


@dataclass
class Workload:
    """What the runner needs from a workload."""

    name: str
    model: str  # history model: cas-register (one key) or kv
    keys: list[str]  # memory ids
    generator: Generator
    precreate: bool  # create every key (value None) before recording starts
    namespace: str = NAMESPACE
    per_client: bool = False  # each client gets a WriteThenRead of its own key

    def history_key(self, key: str) -> str | None:
        return None if self.model == "cas-register" else key

    def generator_for(self, client: int) -> OpSource:
        """The generator of client `client` (0-based); all share the unique-value counter."""
        if not self.per_client:
            return self.generator
        own = self.keys[client % len(self.keys)]
        return WriteThenRead(own, self.keys, self.generator._values)

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


def session(keys: int) -> Workload:
    """One pre-created key per client (``s0``..), each written and at once read back by its
    owner; every client also reads the others' keys. Meant for ``--consistency session``."""
    ids = [f"s{i}" for i in range(keys)]
    return Workload(
        "session", "kv", ids, Generator(ids, {"read": 1.0}), precreate=True, per_client=True
    )


# name -> (factory, default keys); a default of None means one key per client.
WORKLOADS: dict[str, tuple[Callable[[int], Workload], int | None]] = {
    "register": (register, 3),
    "kv": (kv, 64),
    "session": (session, None),
}


def with_read_fraction(mix: dict[str, float], fraction: float) -> dict[str, float]:
    """`mix` with reads at `fraction` and the other operations sharing the rest as before."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"a read fraction is between 0 and 1, not {fraction}")
    others = {f: w for f, w in mix.items() if f != "read"}
    total = sum(others.values())
    return {"read": fraction, **{f: (1.0 - fraction) * w / total for f, w in others.items()}}


def build(
    name: str, keys: int | None, clients: int = 1, read_fraction: float | None = None
) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    factory, default = WORKLOADS[name]
    n = keys if keys is not None else default if default is not None else clients
    workload = factory(n)
    if read_fraction is not None and not workload.per_client:
        workload.generator.mix = with_read_fraction(workload.generator.mix, read_fraction)
    return workload
