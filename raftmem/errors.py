"""The one error hierarchy of raftmem.

Every error a client can see is a :class:`RaftmemError`. Each says whether it
is *definite* (it did not and will not take effect, so the request may be
retried freely) or *indefinite* (it may have taken effect; a write may only be
retried with the same ``request_id``)::

    RaftmemError
    ├── ValidationError        400 definite   bad input, nothing changed
    │   └── PayloadTooLarge    413 definite
    ├── NotFound               404 definite   memory / namespace / route
    ├── Conflict               409 definite   version mismatch, existing id, namespace redefinition
    ├── Unavailable            503 definite   no leader, not leader, overloaded, too stale
    ├── EpochMismatch          503 definite   routed with an old routing table
    ├── CommitTimeout          504 indefinite the proposal's deadline passed
    ├── NotBuilt               501 definite   the feature is not built yet (e.g. the PD executor)
    └── Internal               500 indefinite a bug; logged with a traceback

Foreign exceptions (pysyncobj fail reasons, apsw, aiohttp) are translated at
exactly one seam each; nothing else raises or catches them.
"""

from __future__ import annotations

from typing import Any


class RaftmemError(Exception):
    status: int = 500
    code: str = "internal"
    definite: bool = False

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "definite": self.definite,
        }
        body.update(self.details)
        return {"error": body}


class ValidationError(RaftmemError):
    status = 400
    code = "invalid_request"
    definite = True


class PayloadTooLarge(ValidationError):
    status = 413
    code = "payload_too_large"


class NotFound(RaftmemError):
    status = 404
    code = "not_found"
    definite = True


class Conflict(RaftmemError):
    status = 409
    code = "conflict"
    definite = True


class Unavailable(RaftmemError):
    status = 503
    code = "unavailable"
    definite = True


class EpochMismatch(Unavailable):
    code = "epoch_mismatch"


class RangeMoving(Unavailable):
    """The key's range is moving to another group: nothing was written; the
    router retries until the move ends (docs/placement.md, "Range moves")."""

    code = "range_moving"


class CommitTimeout(RaftmemError):
    status = 504
    code = "commit_timeout"
    definite = False


class NotBuilt(RaftmemError):
    """A request for something this version does not do yet; nothing was done."""

    status = 501
    code = "not_implemented"
    definite = True


class Internal(RaftmemError):
    status = 500
    code = "internal"
    definite = False


class CorruptionError(Exception):
    """An entry could not be applied deterministically: the replica fail-stops.

    Not a client error: it never crosses the API; the group replica that hit it
    stops applying and reports itself unhealthy.
    """


_BY_CODE: dict[str, type[RaftmemError]] = {}
for _cls in (ValidationError, NotFound, Conflict, Unavailable, EpochMismatch, RangeMoving,
             CommitTimeout, Internal):
    _BY_CODE[_cls.code] = _cls


def from_result_error(err: dict[str, Any]) -> RaftmemError:
    """Turn a state machine's error result (``{"code", "message", ...}``) into an exception.

    The state machine reports user-level failures as data, identical on every
    replica; this is where they become the client-visible hierarchy.
    """
    code = str(err.get("code", "internal"))
    message = str(err.get("message", code))
    details = {k: v for k, v in err.items() if k not in ("code", "message")}
    cls: type[RaftmemError]
    if code in ("not_found", "namespace_not_found"):
        cls = NotFound
    elif code in ("version_mismatch", "already_exists", "namespace_conflict", "conflict"):
        cls = Conflict
    elif code in ("invalid_request", "dimension_mismatch"):
        cls = ValidationError
    else:
        cls = _BY_CODE.get(code, Internal)
    return cls(message, code=code, **details)
