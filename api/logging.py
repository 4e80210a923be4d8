"""structlog configuration for the API process: JSON lines, or readable console lines."""

from __future__ import annotations

import sys
from typing import Any

import orjson
import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


def _dumps(event: Any, **kw: Any) -> str:
    return orjson.dumps(event, **kw).decode()


def _stderr_logger(*_args: Any) -> structlog.WriteLogger:
    # sys.stderr looked up per logger, not bound once: it may be replaced (pytest capture).
    return structlog.WriteLogger(sys.stderr)


def configure_logging(json: bool, level: str = "info") -> None:
    """Configure structlog process-wide: one JSON object per line on stderr when ``json``.

    Exceptions logged with ``log.exception`` carry their traceback: as a
    structured list of frames in JSON mode, as text on the console.
    """
    try:
        min_level = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(LEVELS)}") from None
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[Any]
    if json:
        renderer = [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=_stderr_logger,
        # Not cached, so tests can capture logs with structlog.testing.capture_logs.
        cache_logger_on_first_use=False,
    )
