"""Admin authentication: ``Authorization: Bearer <token>`` on /admin/ routes when a token is set."""

from __future__ import annotations

import hmac

from aiohttp import hdrs, web

from raftmem.errors import RaftmemError


class Unauthorized(RaftmemError):
    """401: an admin route without the right bearer token. Definite: nothing was done.

    Defined here rather than in ``raftmem.errors`` because only the HTTP layer
    authenticates; it is still part of the one hierarchy (a ``RaftmemError``).
    """

    status = 401
    code = "unauthorized"
    definite = True


def check_admin(request: web.BaseRequest, token: str) -> None:
    given = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, credentials = given.partition(" ")
    # compare_digest: the time taken must not reveal how much of the token matched.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        credentials.strip().encode(), token.encode()
    ):
        raise Unauthorized("admin routes need 'Authorization: Bearer <admin token>'")
