"""Fixtures for the API tests: a fake service and an in-process HTTP client.

pytest-aiohttp is not a dependency: ``async def`` tests in this directory are
run by the small hook below, each in its own event loop (``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from api import create_app
from tests.api.fake_service import FakeMemoryService


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


@pytest.fixture(autouse=True)
def _restore_structlog() -> Any:
    """create_app configures structlog process-wide; leave it as the next test found it."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def fake() -> FakeMemoryService:
    return FakeMemoryService()


@asynccontextmanager
async def serve(service: Any, **options: Any) -> AsyncIterator[TestClient[Any, Any]]:
    """An HTTP client for ``create_app(service, **options)`` on a loopback port."""
    async with TestClient(TestServer(create_app(service, **options))) as client:
        yield client
