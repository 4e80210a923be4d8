"""Access logs are structured; JSON lines when asked for."""

from __future__ import annotations

import orjson
import pytest

from api.logging import configure_logging
from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
from tests.api.helpers import send


async def test_json_access_log_lines(
    fake: FakeMemoryService, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(fake, json_logs=True) as client:
        await send(client, "GET", "/v1/namespaces/nope")
        fake.fail_with = RuntimeError("kaput")
        await send(client, "GET", "/v1/namespaces")
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    access = [line for line in lines if line["event"] == "http_request"]
    assert [(a["method"], a["path"], a["status"], a["error_code"]) for a in access] == [
        ("GET", "/v1/namespaces/nope", 404, "namespace_not_found"),
        ("GET", "/v1/namespaces", 500, "internal"),
    ]
    assert access[0]["route"] == "/v1/namespaces/{ns}"
    assert access[0]["level"] == "info" and "timestamp" in access[0]
    assert isinstance(access[0]["duration_ms"], float)
    [crash] = [line for line in lines if line["event"] == "unhandled_error"]
    assert crash["level"] == "error"
    assert crash["exception"][0]["exc_type"] == "RuntimeError"
    assert crash["exception"][0]["frames"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(json=True, level="loud")


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    import structlog

    configure_logging(json=True, level="warning")
    structlog.get_logger("t").info("hidden")
    structlog.get_logger("t").warning("shown", n=1)
    [line] = capsys.readouterr().err.splitlines()
    assert orjson.loads(line)["event"] == "shown"
