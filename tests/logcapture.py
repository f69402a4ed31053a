"""The monitor's logging set-up pointed at a buffer the test reads, and put back afterwards."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from monitor.logs import configure_logging


@contextmanager
def configured_logging(level: str = "info", fmt: str = "json") -> Iterator[io.StringIO]:
    """``configure_logging(level, fmt)`` writing to the yielded buffer; the previous set-up is restored."""
    saved = structlog.get_config()
    root, monitor = logging.getLogger(), logging.getLogger("monitor")
    handlers, root_level, monitor_level = root.handlers[:], root.level, monitor.level
    excepthook = sys.excepthook
    stream = io.StringIO()
    try:
        configure_logging(level, fmt, stream=stream)
        yield stream
    finally:
        logging.captureWarnings(False)
        sys.excepthook = excepthook
        root.handlers[:] = handlers
        root.setLevel(root_level)
        monitor.setLevel(monitor_level)
        structlog.configure(**saved)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (a line that is not one fails the test)."""
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    return lines
