"""Tests for monitor.logs: one set-up for structlog and the stdlib loggers, JSON line by line."""

from __future__ import annotations

import logging

import structlog

from tests.logcapture import configured_logging, json_lines


def test_json_covers_library_loggers_and_their_tracebacks() -> None:
    """With JSON, a stdlib logger's record (aiohttp's, asyncio's) is one JSON line with the same fields as
    the monitor's own, and its traceback is a field of that line, not lines of text."""
    with configured_logging("info", "json") as logged:
        structlog.get_logger("monitor.test").info("own_event", answer=42)
        logging.getLogger("aiohttp.server").error("Error handling request from %s", "127.0.0.1")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("asyncio").exception("Task exception was never retrieved")
            structlog.get_logger("monitor.test").exception("own_failure")
    own, library, failed, own_failed = json_lines(logged.getvalue())
    assert own["event"] == "own_event"
    assert own["answer"] == 42
    assert library["event"] == "Error handling request from 127.0.0.1"
    for line in (own, library, failed, own_failed):
        assert {"event", "level", "timestamp", "logger"} <= set(line)
    assert (library["level"], library["logger"]) == ("error", "aiohttp.server")
    for line in (failed, own_failed):
        assert "RuntimeError: boom" in str(line["exception"])


def test_libraries_log_from_warning_and_the_monitor_from_its_level() -> None:
    """At debug, the monitor's own debug lines appear but a library's info and debug lines do not."""
    with configured_logging("debug", "json") as logged:
        structlog.get_logger("monitor.test").debug("own_debug")
        logging.getLogger("aiohttp.access").info("library info")
        logging.getLogger("asyncio").debug("library debug")
        logging.getLogger("asyncio").warning("library warning")
    assert [line["event"] for line in json_lines(logged.getvalue())] == ["own_debug", "library warning"]
    with configured_logging("warning", "json") as logged:
        structlog.get_logger("monitor.test").info("own_info")
        logging.getLogger("monitor.test").info("stdlib info")
    assert logged.getvalue() == ""


def test_console_format_renders_every_logger_readably() -> None:
    """The console format is one readable line per record, the library's too, with the level shown."""
    with configured_logging("info", "console") as logged:
        structlog.get_logger("monitor.test").info("own_event", answer=42)
        logging.getLogger("aiohttp.server").warning("library warning")
    own, library = logged.getvalue().splitlines()
    assert "own_event" in own
    assert "answer=42" in own
    assert "library warning" in library
    assert "warning" in library
    assert not own.startswith("{")
