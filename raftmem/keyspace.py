"""The key space every layer agrees on: the routing-key hash, the ring, what a group owns. Pure.

Below both the state machine (which refuses writes to keys its group does not
own) and the placement layer (which routes keys to groups), so that the two can
never hash a key differently. No I/O, no clock.

An :class:`Ownership` is one group's share of the ring, as that group's
replicated state records it: disjoint ranges, each with the table ``version``
at which the group received it, and the epoch ``(version, conf_ver)`` of the
whole record. Points of the ring are written as 16 hex digits; the end of the
ring (2**64, one past the last hash) as ``"end"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


def format_point(p: int) -> str:
    return "end" if p == RING_SIZE else f"{p:016x}"


def parse_point(text: Any) -> int:
    """Inverse of :func:`format_point`; ValueError for anything else."""
    if text == "end":
        return RING_SIZE
    if not isinstance(text, str) or len(text) != 16:
        raise ValueError(f"a ring point is 16 hex digits or 'end', not {text!r}")
    try:
        return int(text, 16)
    except ValueError:
        raise ValueError(f"a ring point is 16 hex digits or 'end', not {text!r}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class OwnedRange:
    start: int  # inclusive
    end: int  # exclusive; RING_SIZE for the end of the ring
    version: int  # the table version at which the group received this range
    # Moving to another group (docs/placement.md, "Range moves"): writes are
    # refused (range_moving, definite) until the move ends; reads are served.
    frozen: bool = False
    move: str = ""  # the move that froze it: only that move may release it

    def __contains__(self, h: int) -> bool:
        return self.start <= h < self.end


@dataclass(frozen=True)
class Ownership:
    group: int
    version: int
    conf_ver: int
    ranges: tuple[OwnedRange, ...]  # sorted by start, disjoint

    @property
    def epoch(self) -> tuple[int, int]:
        return (self.version, self.conf_ver)

    def range_for(self, h: int) -> OwnedRange | None:
        for r in self.ranges:
            if h in r:
                return r
        return None

    def refusal(self, h: int, epoch: Sequence[int] | None) -> str | None:
        """Why a request for hash ``h`` routed with ``epoch`` must be refused, or None.

        Refused: ``h`` is in no range this group owns, or the request was routed
        with a table older than the version at which the group received the
        range (``epoch[0] < range.version``). ``conf_ver`` (replica changes) does
        not decide who owns a key, so it is not compared. ``epoch`` None (a
        request not routed by a table) is only checked for ownership.
        """
        r = self.range_for(h)
        if r is None:
            return f"group {self.group} does not own hash {h:016x}"
        if epoch is not None and epoch[0] < r.version:
            return (f"routed with table version {epoch[0]}; group {self.group} owns "
                    f"[{format_point(r.start)}, {format_point(r.end)}) since version {r.version}")
        return None

    def moving(self, h: int) -> OwnedRange | None:
        """The frozen range holding ``h`` (writes to it wait for its move), or None."""
        r = self.range_for(h)
        return r if r is not None and r.frozen else None

    def problem(self) -> str | None:
        """What makes this ownership malformed, or None."""
        if not _is_int(self.group) or self.group < 0:
            return "group must be a non-negative integer"
        if not _is_int(self.version) or not _is_int(self.conf_ver) \
                or self.version < 0 or self.conf_ver < 0:
            return "version and conf_ver must be non-negative integers"
        last = 0
        for r in self.ranges:
            if not (_is_int(r.start) and _is_int(r.end) and _is_int(r.version)):
                return "range bounds and versions must be integers"
            if not 0 <= r.start < r.end <= RING_SIZE:
                return f"range [{r.start}, {r.end}) is empty or outside the ring"
            if r.start < last:
                return "ranges must be sorted and disjoint"
            if not 0 <= r.version <= self.version:
                return f"range version {r.version} is above the ownership's version {self.version}"
            last = r.end
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "epoch": {"version": self.version, "conf_ver": self.conf_ver},
            "ranges": [
                {"start": format_point(r.start), "end": format_point(r.end), "version": r.version,
                 **({"frozen": True, "move": r.move} if r.frozen else {})}
                for r in self.ranges
            ],
        }

    @classmethod
    def from_dict(cls, d: Any) -> Ownership:
        """Parse :meth:`to_dict`'s form; ValueError for anything malformed."""
        if not isinstance(d, Mapping) or set(d) != {"group", "epoch", "ranges"}:
            raise ValueError("ownership must be an object with group, epoch and ranges")
        epoch, ranges = d["epoch"], d["ranges"]
        if not isinstance(epoch, Mapping) or set(epoch) != {"version", "conf_ver"}:
            raise ValueError("ownership epoch must be an object with version and conf_ver")
        if not isinstance(ranges, list):
            raise ValueError("ownership ranges must be a list")  # noqa: TRY004 - one error type
        parsed = []
        for r in ranges:
            if not isinstance(r, Mapping) or not (
                    {"start", "end", "version"} <= set(r)
                    <= {"start", "end", "version", "frozen", "move"}):
                raise ValueError("an owned range is an object with start, end, version"
                                 " (and frozen, move)")
            frozen, move = r.get("frozen", False), r.get("move", "")
            if not isinstance(frozen, bool) or not isinstance(move, str):
                raise ValueError("an owned range's frozen is a boolean, its move a string")  # noqa: TRY004
            parsed.append(OwnedRange(parse_point(r["start"]), parse_point(r["end"]), r["version"],
                                     frozen, move if frozen else ""))
        own = cls(d["group"], epoch["version"], epoch["conf_ver"], tuple(parsed))
        why = own.problem()
        if why:
            raise ValueError(why)
        return own


def covers_ring_once(records: Sequence[Ownership | Mapping[str, Any] | None]) -> bool:
    """Do these ownership records (one per group read; objects, or dicts as another
    node sent them) cover every point of the ring exactly once? A missing record
    (a database that checks nothing) makes the answer yes: nothing to check."""
    spans: list[tuple[int, int]] = []
    for d in records:
        if d is None:
            return True
        if isinstance(d, Ownership):
            own = d
        else:
            try:
                own = Ownership.from_dict(d)
            except ValueError:
                return False
        spans.extend((r.start, r.end) for r in own.ranges)
    spans.sort()
    at = 0
    for start, end in spans:
        if start != at:
            return False
        at = end
    return at == RING_SIZE
