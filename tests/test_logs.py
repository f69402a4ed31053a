"""Tests for monitor.logs: one set-up for structlog and the stdlib loggers, JSON line by line."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import structlog
import yaml

from monitor.simulator.fleet import Rates
from monitor.simulator.server import SimulatorSettings, running_simulator
from monitor.web.access import FAILURE_BURST
from tests.logcapture import configured_logging, json_lines
from tests.web.conftest import HASH, PASSWORD, basic
from tests.web.test_server import MALFORMED, assert_clean_log, exchange, last_status

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "logs-test-token"


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


def test_a_crash_is_one_json_line_too() -> None:
    """An exception nobody catches ends the process with exit code 1 and one JSON line holding its
    traceback, not lines of text."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from monitor.logs import configure_logging; configure_logging('info', 'json'); "
            "raise RuntimeError('boom')",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    (line,) = json_lines(result.stderr)
    assert (line["event"], line["level"]) == ("uncaught_exception", "critical")
    assert "RuntimeError: boom" in str(line["exception"])


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


async def test_the_running_service_logs_only_json_when_clients_send_garbage(tmp_path: Path) -> None:
    """``python -m monitor run`` with JSON logs, basic auth and ResourceWarnings shown: after every kind of
    malformed request and wrong passwords up to a 429, each line on stderr is JSON, none is a traceback,
    none holds the clients' bytes, and the process still answers (the right password, remembered from
    the earlier requests, even from the limited client) and exits 0 on SIGTERM."""
    settings = SimulatorSettings(size=5, seed=3, rates=Rates(), tokens=(TOKEN,))
    async with running_simulator(settings) as sim:
        config = {
            "foundry": {"base_url": sim.base_url, "auth": {"token": TOKEN}},
            "deployments": list(sim.fleet.rids),
            "server": {"listen": "127.0.0.1:0", "basic_auth": {"prometheus": HASH}},
            "sinks": {"stdout": False},
            "state": {"path": str(tmp_path / "monitor.sqlite3")},
            "logging": {"level": "debug", "format": "json"},
        }
        (tmp_path / "monitor.yaml").write_text(yaml.safe_dump(config))
        stderr = tmp_path / "stderr.log"
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "monitor", "run", "--config", str(tmp_path / "monitor.yaml")],
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "always::ResourceWarning"},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            with anyio.fail_after(30):
                while '"http_listening"' not in stderr.read_text():
                    assert proc.poll() is None, stderr.read_text()
                    await anyio.sleep(0.05)
            port = next(
                line["port"] for line in json_lines(stderr.read_text()) if line["event"] == "http_listening"
            )
            for what, parts, status in MALFORMED:
                assert last_status(await exchange(port, parts)) == status, what
            async with aiohttp.ClientSession() as session:
                for attempt in range(FAILURE_BURST + 1):
                    header = {"Authorization": basic("prometheus", f"wrong-{attempt}")}
                    async with session.get(f"http://127.0.0.1:{port}/metrics", headers=header) as response:
                        await response.read()
                assert response.status == 429
                header = {"Authorization": basic("prometheus", PASSWORD)}
                async with session.get(f"http://127.0.0.1:{port}/healthz", headers=header) as response:
                    assert response.status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            code = await anyio.to_thread.run_sync(lambda: proc.wait(timeout=30))
    assert code == 0
    text = stderr.read_text()
    lines = assert_clean_log(text)
    assert "ResourceWarning" not in text
    assert any(line["event"] == "http_bad_request" for line in lines)
