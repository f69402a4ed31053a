"""Tests for monitor.simulator.cli: options to settings, and a real run stopped by a signal."""

from __future__ import annotations

import argparse
import re
import signal
import socket
import sys

import aiohttp
import anyio
import pytest
from anyio.abc import Process

from monitor.simulator.cli import configure_parser, run, settings_from_args
from monitor.simulator.fleet import DEFAULT_RATES, Rates, Rollouts

RUN_CLI = (
    "import argparse, sys\n"
    "from monitor.simulator.cli import configure_parser, run\n"
    "parser = argparse.ArgumentParser()\n"
    "configure_parser(parser)\n"
    "sys.exit(run(parser.parse_args(sys.argv[1:])))\n"
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    """Without options: loopback port 9709, 50 deployments, seed 1, the demo token, the default life."""
    settings = settings_from_args(parse())
    assert (settings.host, settings.port, settings.size, settings.seed) == ("127.0.0.1", 9709, 50, 1)
    assert settings.tokens == ("demo-token",)
    assert dict(settings.clients) == {}
    assert settings.rates == DEFAULT_RATES
    assert (settings.token_ttl, settings.tick) == (3600.0, 0.5)


def test_options() -> None:
    """Tokens and clients repeat, --churn scales every rate, --rate sets one, --static stops all."""
    settings = settings_from_args(
        parse(
            *("--token", "a", "--token", "b", "--client", "svc:s3cret:x", "--client", "two:pw"),
            *("--churn", "2", "--rate", "fail=0.5", "--token-ttl", "60", "--tick", "0.1", "--size", "7"),
        )
    )
    assert settings.tokens == ("a", "b")
    assert dict(settings.clients) == {"svc": "s3cret:x", "two": "pw"}
    assert settings.rates.degrade == pytest.approx(DEFAULT_RATES.degrade * 2)
    assert settings.rates.fail == 0.5
    assert (settings.token_ttl, settings.tick, settings.size) == (60.0, 0.1, 7)
    assert settings_from_args(parse("--static", "--churn", "5")).rates == Rates()


@pytest.mark.parametrize(
    "argv",
    [
        ("--client", "no-secret-here"),
        ("--rate", "explode=1"),
        ("--rate", "fail=often"),
        ("--size", "0"),
        ("--size", "100001"),
        ("--tick", "0"),
        ("--token-ttl", "-1"),
        ("--rollout-delay", "-1"),
        ("--rollout-delay", "nan"),
        ("--stuck", "1.5"),
        ("--stuck", "often"),
    ],
)
def test_bad_options_are_usage_errors(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed option exits with argparse's usage error (2), and a client secret is never echoed."""
    with pytest.raises(SystemExit) as caught:
        parse(*argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err
    if argv[0] == "--client":
        assert argv[1] not in err


def test_rollout_options() -> None:
    """--rollout-delay and --stuck set how published versions roll out; by default the fleet's defaults,
    and the default life publishes versions; --rate publish=... sets the publishing rate alone."""
    assert settings_from_args(parse()).rollouts == Rollouts()
    settings = settings_from_args(parse("--rollout-delay", "0", "--stuck", "1", "--rate", "publish=0.5"))
    assert settings.rollouts == Rollouts(delay=0.0, stuck=1.0)
    assert settings.rates.publish == 0.5
    assert settings_from_args(parse()).rates.publish == DEFAULT_RATES.publish > 0


def test_negative_churn_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Settings that cannot be (a negative rate) end run() with status 2 and a message, before binding."""
    assert run(parse("--churn", "-1", "--port", "0")) == 2
    assert "rate" in capsys.readouterr().err


def test_port_in_use_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    """When the port is taken, run() says so and returns 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run(parse("--port", str(port), "--static", "--size", "3")) == 1
    assert "cannot listen" in capsys.readouterr().err


async def read_line(process: Process) -> str:
    assert process.stdout is not None
    buffer = b""
    while b"\n" not in buffer:
        buffer += await process.stdout.receive()
    return buffer.decode()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_run_serves_until_signalled(stop: signal.Signals, anyio_backend: str) -> None:
    """The command prints where it listens (no secret), serves the API, and exits 0 on SIGINT or SIGTERM."""
    token = "cli-secret-token"
    argv = [sys.executable, "-c", RUN_CLI, "--port", "0", "--size", "5", "--static", "--token", token]
    async with await anyio.open_process(argv) as process:
        try:
            with anyio.fail_after(30):
                line = await read_line(process)
            assert token not in line
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+) ", line)
            assert match, line
            base_url = match.group(1)
            async with aiohttp.ClientSession(base_url) as session:
                async with session.get("/_sim/health") as response:
                    assert (await response.json())["size"] == 5
                async with session.get("/_sim/deployments") as response:
                    rid = (await response.json())["rids"][0]
                path = f"/api/v2/models/liveDeployments/{rid}?preview=true"
                for sent, expected in ((token, 200), ("demo-token", 401)):
                    async with session.get(path, headers={"Authorization": f"Bearer {sent}"}) as response:
                        assert response.status == expected
            process.send_signal(stop)
            with anyio.fail_after(15):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
