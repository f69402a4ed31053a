"""The ``foundry-monitor simulate`` subcommand: run the bundled Foundry simulator until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys

import anyio

from monitor.simulator.fleet import DEFAULT_RATES, MAX_SIZE, Rates, Rollouts
from monitor.simulator.server import DEFAULT_TOKEN, SimulatorSettings, running_simulator

__all__ = ["configure_parser", "run", "settings_from_args"]


def _client(text: str) -> tuple[str, str]:
    client_id, sep, secret = text.partition(":")
    if not sep or not client_id or not secret:
        # The secret is not echoed back: argparse prints the message.
        raise argparse.ArgumentTypeError("expected CLIENT_ID:SECRET")
    return client_id, secret


def _rate(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    known = DEFAULT_RATES.as_dict()
    if not sep or name not in known:
        raise argparse.ArgumentTypeError(f"expected NAME=PER_SECOND with NAME one of {', '.join(known)}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not a number") from None
    return name, number


def _size(text: str) -> int:
    try:
        size = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= size <= MAX_SIZE:
        raise argparse.ArgumentTypeError(f"size must be between 1 and {MAX_SIZE}")
    return size


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _number(text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not low <= value <= high:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
    return value


def _seconds(text: str) -> float:
    return _number(text, 0.0, 86_400.0)


def _probability(text: str) -> float:
    return _number(text, 0.0, 1.0)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to ``parser`` (the ``simulate`` subcommand's)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=9709, help="port to listen on; 0 picks one (default: 9709)"
    )
    parser.add_argument("--size", type=_size, default=50, help="simulated deployments (default: 50)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the fleet and its life (default: 1)")
    parser.add_argument(
        "--token",
        action="append",
        dest="tokens",
        metavar="TOKEN",
        help=f"accepted static bearer token, repeatable (default: {DEFAULT_TOKEN})",
    )
    parser.add_argument(
        "--client",
        action="append",
        dest="clients",
        type=_client,
        metavar="ID:SECRET",
        help="OAuth2 client credentials the token endpoint accepts, repeatable",
    )
    parser.add_argument(
        "--token-ttl", type=_positive, default=3600.0, help="lifetime of issued OAuth2 tokens, seconds"
    )
    parser.add_argument("--tick", type=_positive, default=0.5, help="seconds of wall time between life steps")
    parser.add_argument(
        "--churn", type=float, default=1.0, help="multiplier of every lifecycle rate (default: 1.0)"
    )
    parser.add_argument(
        "--rate",
        action="append",
        dest="rates",
        type=_rate,
        metavar="NAME=PER_SECOND",
        help="set one lifecycle rate (after --churn), repeatable",
    )
    parser.add_argument(
        "--rollout-delay",
        type=_seconds,
        default=Rollouts().delay,
        help="seconds from publishing a model version to its rollout (default: %(default)g)",
    )
    parser.add_argument(
        "--stuck",
        type=_probability,
        default=Rollouts().stuck,
        help="share of published versions whose rollout never happens (default: %(default)g)",
    )
    parser.add_argument("--static", action="store_true", help="no automatic life: the fleet never changes")


def settings_from_args(args: argparse.Namespace) -> SimulatorSettings:
    """The settings the parsed options describe; ``ValueError`` for values out of range."""
    if args.static:
        rates = Rates()
    else:
        values = DEFAULT_RATES.scaled(args.churn).as_dict()
        values.update(dict(args.rates or ()))
        rates = Rates(**values)
    return SimulatorSettings(
        host=args.host,
        port=args.port,
        size=args.size,
        seed=args.seed,
        rates=rates,
        rollouts=Rollouts(delay=args.rollout_delay, stuck=args.stuck),
        tokens=tuple(args.tokens or (DEFAULT_TOKEN,)),
        clients=dict(args.clients or ()),
        token_ttl=args.token_ttl,
        tick=args.tick,
    )


def run(args: argparse.Namespace) -> int:
    """Run until SIGINT or SIGTERM: 0 on a clean stop, 2 for bad settings, 1 if it cannot listen."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"foundry-monitor simulate: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with running_simulator(settings) as handle:
                life = "static" if settings.rates.is_static else f"life every {settings.tick:g}s"
                print(
                    f"foundry-monitor simulate: listening on {handle.base_url} "
                    f"({settings.size} deployments, seed {settings.seed}, {life}); Ctrl-C stops.",
                    flush=True,
                )
                async for _ in signals:
                    break

    try:
        anyio.run(main)
    except OSError as exc:
        print(
            f"foundry-monitor simulate: cannot listen on {args.host}:{args.port} ({exc.strerror})",
            file=sys.stderr,
        )
        return 1
    return 0
