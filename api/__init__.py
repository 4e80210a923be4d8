"""The REST API of raftmem: an aiohttp app over a :class:`raftmem.types.MemoryService`."""

from api.app import create_app

__all__ = ["create_app"]
