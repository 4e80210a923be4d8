"""An HTTP operation as data: what it accepts, what it answers, and the handler that serves it.

One :class:`Operation` per method and path. The app registers its handler, the
dispatcher validates its parameters and body against its schemas, and
``/openapi.json`` describes it, all from the same object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from raftmem.types import MemoryService

Schema = dict[str, Any]
Location = Literal["path", "query", "header"]


@dataclass(frozen=True)
class Param:
    name: str
    location: Location
    schema: Schema
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Response:
    description: str
    schema: Schema | None = None


@dataclass(frozen=True)
class Call:
    """A request after validation: everything a handler may look at."""

    service: MemoryService
    path: Mapping[str, Any]
    query: Mapping[str, Any]
    headers: Mapping[str, Any]
    body: Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Call], Awaitable[Reply]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    handler: Handler
    tag: str
    params: tuple[Param, ...] = ()
    body: Schema | None = None
    body_required: bool = True
    responses: Mapping[int, Response] = field(default_factory=dict)
    # Error responses (by status) besides the ones every operation may give.
    errors: tuple[int, ...] = ()
    description: str = ""

    @property
    def admin(self) -> bool:
        """Admin operations live under /admin/ and need the admin token when one is set."""
        return self.path.startswith("/admin/")

    def params_in(self, location: Location) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.location == location)
