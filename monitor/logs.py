"""Logging set-up: structlog and stdlib logging to stderr, JSON when not on a terminal, readable on one."""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog, and the stdlib loggers of aiohttp, asyncio and friends, through one handler.

    Every line has the same fields and, as JSON, is one JSON object: a library's record and its traceback
    included. Logs go to ``stream`` (stderr); events go to stdout, so an operator can pipe one without
    the other.
    """
    out = sys.stderr if stream is None else stream
    numeric = _LEVELS.get(level, logging.INFO)
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *(
                    [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
                    if as_json
                    else [structlog.dev.ConsoleRenderer(colors=False)]
                ),
            ],
        )
    )
    # Libraries speak from warnings up, the monitor's own loggers from the configured level.
    logging.basicConfig(handlers=[handler], level=max(numeric, logging.WARNING), force=True)
    logging.getLogger("monitor").setLevel(numeric)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    """A crash's traceback as one more log line, in the same format, instead of text on stderr."""
    structlog.get_logger("monitor").critical("uncaught_exception", exc_info=(kind, error, trace))
