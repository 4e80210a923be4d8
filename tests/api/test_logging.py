"""Access logs are structured; JSON lines when asked for."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from api.logging import configure_logging
from tests.api.conftest import serve
from tests.api.fake_service import FakeMemoryService
from tests.api.helpers import send


async def test_json_access_log_lines(
    fake: FakeMemoryService, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(fake, json_logs=True, access_log="all") as client:
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


@pytest.mark.parametrize("mode", ["errors", "off"])
async def test_access_log_modes_other_than_all(
    fake: FakeMemoryService, capsys: pytest.CaptureFixture[str], mode: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """``errors`` (the node default): only 5xx answers and slow requests; ``off``: none."""
    from api import middleware

    async with serve(fake, json_logs=True, access_log=mode) as client:
        await send(client, "GET", "/v1/namespaces/nope")  # 404: not logged
        await send(client, "GET", "/v1/namespaces")  # 200: not logged
        monkeypatch.setattr(middleware.time, "perf_counter", _slow_clock())
        await send(client, "GET", "/v1/namespaces")  # 200 in "2 s": slow
        monkeypatch.undo()
        fake.fail_with = RuntimeError("kaput")
        await send(client, "GET", "/v1/namespaces")  # 500
    lines = [orjson.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    access = [(a["status"], a["level"]) for a in lines if a["event"] == "http_request"]
    assert access == ([] if mode == "off" else [(200, "warning"), (500, "warning")])


def _slow_clock() -> Any:
    """perf_counter stand-in: each call 2 s after the previous one."""
    t = [0.0]

    def clock() -> float:
        t[0] += 2.0
        return t[0]

    return clock


def test_unknown_access_log_mode_is_refused() -> None:
    from api import middleware

    with pytest.raises(ValueError, match="access log"):
        middleware.access_log("some")
