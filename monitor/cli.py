"""The ``foundry-monitor`` command line: run, once, demo, simulate, check-config, config-schema."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import structlog
import yaml

from monitor import __version__
from monitor.budget import RequestBudget
from monitor.config import Config, ConfigError, config_schema, load_config, masked
from monitor.demand import config_demand
from monitor.events import Event
from monitor.logs import configure_logging
from monitor.metrics import ProcessMetrics
from monitor.partition import EVERYTHING, Shard, ShardError
from monitor.service import Service, foundry_client, run_until_signalled, scheduler_for
from monitor.state import StateUnavailable, whereabouts
from monitor.tracker import Record, Tracker
from monitor.watchset import WatchSet

EXIT_CONFIG = 2
#: ``run`` could not open its state (the database is unreachable, refuses the credentials, or the file
#: cannot be used): nothing was started, and a restart may succeed once the database answers.
EXIT_STATE = 3

log = structlog.get_logger("monitor.cli")


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"foundry-monitor: invalid configuration {path}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    sys.stdout.write(yaml.safe_dump(masked(config), sort_keys=False))
    # A comment, so that the output stays a configuration file.
    sys.stdout.write(f"# request demand: {config_demand(config).describe()}\n")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(json.dumps(config_schema(), indent=2) + "\n")
    return 0


def shard_of(shard: str | None, total: int | None, environ: Mapping[str, str]) -> Shard | None:
    """The shard ``--shard`` and ``--total-shards`` name (None without either).

    ``--shard auto`` takes the ordinal of a StatefulSet pod's name ``<set>-<ordinal>``: ``POD_NAME`` (set
    from the downward API), else the host name, which Kubernetes sets to the pod's name.
    """
    if shard is None and total is None:
        return None
    if shard is None or total is None:
        raise ShardError("--shard and --total-shards go together")
    if shard == "auto":
        pod = environ.get("POD_NAME", "").strip()
        source, name = ("POD_NAME", pod) if pod else ("the host name", socket.gethostname())
        try:
            return Shard.of_pod(name, total)
        except ShardError as exc:
            raise ShardError(f"--shard auto, from {source}: {exc}") from None
    try:
        index = int(shard)
    except ValueError:
        raise ShardError(f"--shard takes a shard number or auto, not {shard!r}") from None
    return Shard(index, total)


def _refused(problem: ShardError) -> int:
    print(f"foundry-monitor: {problem}", file=sys.stderr)
    return EXIT_CONFIG


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        shard = shard_of(args.shard, args.total_shards, os.environ)
        if shard is not None:
            shard.state(config.state)  # refuses a backend that cannot be sharded, before anything starts
    except ShardError as exc:
        return _refused(exc)
    configure_logging(config.logging.level, config.logging.format)
    try:
        return anyio.run(run_until_signalled, Service(config, shard=shard))
    except (StateUnavailable, BaseExceptionGroup) as exc:
        unavailable = _only_state_unavailable(exc)
        if unavailable is None:
            raise
        # The cause says what failed (refused, timed out, authentication); the DSN, which may hold
        # parameters that are secrets, is left out for the backend and host.
        cause = unavailable.__cause__ or unavailable
        where = whereabouts(config.state if shard is None else shard.state(config.state))
        log.error("state_database_unavailable", **where, error=f"{type(cause).__name__}: {cause}")  # noqa: TRY400
        return EXIT_STATE


def _only_state_unavailable(error: BaseException) -> StateUnavailable | None:
    """The ``StateUnavailable`` that ``error`` is, or is all a group of; None when anything else failed."""
    if isinstance(error, StateUnavailable):
        return error
    if isinstance(error, BaseExceptionGroup):
        matched, rest = error.split(StateUnavailable)
        if matched is not None and rest is None:
            return _only_state_unavailable(matched.exceptions[0])
    return None


def cmd_demo(args: argparse.Namespace) -> int:
    """The monitor and the bundled simulator in one process, the simulator on the config's base URL."""
    from monitor.simulator.server import SimulatorSettings, serve

    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    base = urlsplit(config.foundry.base_url)
    settings = SimulatorSettings(
        host=base.hostname or "127.0.0.1",
        port=base.port or 9709,
        size=args.size,
        seed=args.seed,
        tokens=(config.foundry.auth.token or "demo-token",),
    )

    async def main() -> int:
        async with anyio.create_task_group() as tg:
            await tg.start(serve, settings)
            code = await run_until_signalled(Service(config))
            tg.cancel_scope.cancel()
        return code

    print(
        f"foundry-monitor demo: simulator at {config.foundry.base_url}, status page at "
        f"http://{config.server.host}:{config.server.port}/, metrics at "
        f"http://{config.server.host}:{config.server.port}/metrics, events on stdout"
        + (f" and in {config.sinks.file.path}" if config.sinks.file else "")
        + "; Ctrl-C stops.",
        file=sys.stderr,
    )
    return anyio.run(main)


def _outcome_row(record: Record) -> dict[str, Any]:
    target, snapshot = record.target, record.snapshot
    row: dict[str, Any] = {"rid": target.rid, "deployment": target.name}
    if record.found is False:
        row.update(state="NOT_FOUND", error=record.last_error, ok=False)
    elif not record.up or snapshot is None:
        row.update(state="UNREACHABLE", error=record.last_error, ok=False)
    else:
        row.update(
            state=snapshot.state,
            ready=snapshot.is_ready,
            replicas=f"{snapshot.runtime.min_replicas}-{snapshot.runtime.max_replicas}",
            model_version_rid=snapshot.model_version_rid,
            ok=snapshot.state != "FAILED",
        )
    return row


class _Unpublished:
    """Where ``once`` sends events: nowhere, it reports the records the round left instead."""

    def publish(self, events: Sequence[Event]) -> None:
        del events


async def poll_once(config: Config, shard: Shard | None = None) -> list[dict[str, Any]]:
    """One round of the service's own polling over the watch set ``run`` would watch (discovery included),
    of ``shard``'s deployments only when given."""
    polling = config.polling
    metrics = ProcessMetrics()
    tracker = Tracker(unreachable_after=polling.unreachable_after)
    budget = RequestBudget(requests_per_second=polling.requests_per_second, concurrency=polling.concurrency)
    async with foundry_client(
        config.foundry, metrics=metrics, budget=budget, concurrency=polling.concurrency
    ) as client:
        scheduler = scheduler_for(config, reader=client, tracker=tracker, bus=_Unpublished(), metrics=metrics)
        watched = WatchSet(lister=client, watcher=scheduler, metrics=metrics, partition=shard or EVERYTHING)
        async with anyio.create_task_group() as tg:
            await watched.apply(config, tg)
            await tg.start(scheduler.run)
            await scheduler.first_round_done.wait()
            tg.cancel_scope.cancel()
    return [_outcome_row(record) for record in tracker]


def _table(rows: Sequence[dict[str, Any]]) -> str:
    columns = ("deployment", "state", "ready", "replicas", "error", "rid")
    cells = [[str(row.get(col, "")) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(line[i]) for line in cells]) for i, col in enumerate(columns)]
    lines = ["  ".join(col.upper().ljust(width) for col, width in zip(columns, widths, strict=True))]
    lines.extend(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    )
    return "\n".join(line.rstrip() for line in lines) + "\n"


def cmd_once(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    try:
        shard = shard_of(args.shard, args.total_shards, os.environ)
    except ShardError as exc:
        return _refused(exc)
    configure_logging("warning", config.logging.format)
    rows = anyio.run(poll_once, config, shard)
    if args.output == "json":
        sys.stdout.write(json.dumps({"deployments": rows}, indent=2) + "\n")
    else:
        sys.stdout.write(_table(rows))
    return 0 if all(row["ok"] for row in rows) else 1


def cmd_simulate(args: argparse.Namespace) -> int:
    import monitor.simulator.cli as simulator_cli

    return simulator_cli.run(args)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; the ``simulate`` command's options only when ``command`` is it."""
    parser = argparse.ArgumentParser(prog="foundry-monitor", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="watch deployments and serve metrics until stopped",
        description="Watch deployments and serve metrics until SIGTERM or SIGINT (exit 0). Exit 2: a bad "
        f"configuration or shard; exit {EXIT_STATE}: the state database (or file) is unavailable at start.",
    )
    run.add_argument("--config", required=True, help="YAML configuration file")
    _add_shard_options(run)
    run.set_defaults(func=cmd_run)

    once = commands.add_parser("once", help="poll every deployment once; non-zero exit on a bad one")
    once.add_argument("--config", required=True)
    once.add_argument("--output", choices=("table", "json"), default="table")
    _add_shard_options(once)
    once.set_defaults(func=cmd_once)

    check = commands.add_parser("check-config", help="validate a configuration and print it, secrets masked")
    check.add_argument("config", help="YAML configuration file")
    check.set_defaults(func=cmd_check_config)

    schema = commands.add_parser("config-schema", help="print the JSON Schema of the configuration file")
    schema.set_defaults(func=cmd_config_schema)

    demo = commands.add_parser("demo", help="run the monitor against the bundled simulator, in one process")
    demo.add_argument("--config", default="config/demo.yaml")
    demo.add_argument("--size", type=int, default=50, help="simulated deployments")
    demo.add_argument("--seed", type=int, default=1)
    demo.set_defaults(func=cmd_demo)

    simulate = commands.add_parser("simulate", help="run the bundled Foundry simulator")
    if command == "simulate":
        # The simulator's options come with the simulator (~2.6 MB) that the monitor itself never needs.
        import monitor.simulator.cli as simulator_cli

        simulator_cli.configure_parser(simulate)
    simulate.set_defaults(func=cmd_simulate)
    return parser


def _add_shard_options(command: argparse.ArgumentParser) -> None:
    shards = command.add_argument_group("static sharding (docs/sharding.md)")
    shards.add_argument(
        "--shard",
        metavar="N|auto",
        help="watch only shard N (0 to M-1) of the deployments; auto: the ordinal of POD_NAME, else of the "
        "host name (<name>-<ordinal>, as a StatefulSet names its pods)",
    )
    shards.add_argument("--total-shards", metavar="M", type=int, help="the number of shards, with --shard")


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(given[0] if given else None).parse_args(given)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 0
