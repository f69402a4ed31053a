"""Tests for monitor.cli: exit codes and output of the commands that need no upstream."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "tok-SENTINEL-5f1e"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_check_config_prints_the_effective_config_with_secrets_masked() -> None:
    """check-config exits 0 and prints YAML in which the token is masked."""
    result = run_cli(
        "check-config",
        "config/monitor.yaml",
        env={"FOUNDRY_HOSTNAME": "acme.example.com", "FOUNDRY_TOKEN": SENTINEL},
    )
    assert result.returncode == 0, result.stderr
    assert "base_url: https://acme.example.com" in result.stdout
    assert "token: '***'" in result.stdout
    assert SENTINEL not in result.stdout + result.stderr


def test_a_bad_config_exits_2_naming_every_problem_by_key_path(tmp_path: Path) -> None:
    """Every problem is listed with its key path, the secret value is not echoed, and the exit code is 2."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "foundry:\n"
        "  base_url: http://127.0.0.1:1\n"
        f"  auth: {{token: {SENTINEL}, client_id: someone}}\n"
        "deployments:\n"
        "  - rid: not-a-rid\n"
        "polling:\n"
        "  interval: fast\n"
        "  concurrency: 0\n"
        "sinks:\n"
        "  webhooks:\n"
        "    - timeout: 5s\n"
        "surprise: 1\n"
    )
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == 2
    for path in (
        "foundry.auth",
        "deployments[0].rid",
        "polling.interval",
        "polling.concurrency",
        "sinks.webhooks[0].url",
        "surprise",
    ):
        assert f"{path}:" in result.stderr, path
    assert SENTINEL not in result.stdout + result.stderr


def test_config_schema_prints_a_json_schema_the_examples_pass() -> None:
    """config-schema prints JSON Schema that accepts config/demo.yaml and refuses an unknown key."""
    import json

    import jsonschema
    import yaml

    result = run_cli("config-schema")
    assert result.returncode == 0, result.stderr
    validator = jsonschema.Draft202012Validator(json.loads(result.stdout))
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    assert list(validator.iter_errors(demo)) == []
    assert not validator.is_valid({**demo, "surprise": 1})


def test_unreadable_and_non_yaml_configs_exit_2(tmp_path: Path) -> None:
    """A missing file and a file that is not YAML are reported, not raised."""
    assert run_cli("check-config", str(tmp_path / "missing.yaml")).returncode == 2
    junk = tmp_path / "junk.yaml"
    junk.write_text("foundry: [unclosed\n")
    result = run_cli("check-config", str(junk))
    assert result.returncode == 2
    assert "not valid YAML" in result.stderr


def _sim_config(tmp_path: Path, base_url: str, rids: list[str]) -> Path:
    path = tmp_path / "once.yaml"
    lines = ["foundry:", f"  base_url: {base_url}", "  auth: {token: cli-token}", "deployments:"]
    lines += [f"  - rid: {rid}" for rid in rids]
    lines += ["state: {path: " + str(tmp_path / "s.sqlite3") + "}"]
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_once_prints_a_table_and_its_exit_code_says_whether_all_is_well(tmp_path: Path) -> None:
    """once exits 0 on a healthy fleet and 1 when a deployment is FAILED or not found; json output parses."""
    import json

    import anyio

    from monitor.simulator.fleet import Rates
    from monitor.simulator.server import SimulatorSettings, running_simulator

    settings = SimulatorSettings(size=3, seed=2, rates=Rates(), tokens=("cli-token",))
    async with running_simulator(settings) as sim:
        rids = list(sim.fleet.rids)
        for rid in rids:
            sim.fleet.set_status(rid, "ACTIVE", True)
        config = str(_sim_config(tmp_path, sim.base_url, rids))
        healthy = await anyio.to_thread.run_sync(lambda: run_cli("once", "--config", config))
        assert healthy.returncode == 0, healthy.stderr
        assert "DEPLOYMENT" in healthy.stdout
        assert healthy.stdout.count("ACTIVE") == 3
        sim.fleet.set_status(rids[0], "FAILED", False)
        sim.fleet.delete(rids[1])
        broken = await anyio.to_thread.run_sync(
            lambda: run_cli("once", "--config", config, "--output", "json")
        )
    assert broken.returncode == 1
    rows = {row["rid"]: row for row in json.loads(broken.stdout)["deployments"]}
    assert rows[rids[0]]["state"] == "FAILED"
    assert rows[rids[1]]["state"] == "NOT_FOUND"
    assert rows[rids[2]]["ok"] is True


async def test_once_polls_discovered_deployments_as_run_would(tmp_path: Path) -> None:
    """once watches what run would watch: a discover entry's deployments are listed and polled too."""
    import json

    import anyio

    from monitor.simulator.fleet import Rates
    from monitor.simulator.server import SimulatorSettings, running_simulator

    settings = SimulatorSettings(size=30, seed=3, rates=Rates(), tokens=("cli-token",))
    async with running_simulator(settings) as sim:
        model = next(m for m in sim.fleet.models if sim.fleet.deployments_of(m))
        discovered = list(sim.fleet.deployments_of(model))
        static = next(rid for rid in sim.fleet.rids if rid not in discovered)
        path = _sim_config(tmp_path, sim.base_url, [static])
        path.write_text(path.read_text() + f"discover:\n  - model_rid: {model}\n")
        result = await anyio.to_thread.run_sync(
            lambda: run_cli("once", "--config", str(path), "--output", "json")
        )
    rows = json.loads(result.stdout)["deployments"]
    assert discovered
    assert {row["rid"] for row in rows} == {static, *discovered}
    assert all(row["state"] not in ("UNREACHABLE", "NOT_FOUND") for row in rows), rows


def test_check_config_ends_with_the_request_demand_and_says_when_intervals_cannot_be_kept(
    tmp_path: Path,
) -> None:
    """100 deployments every second against 10 requests a second: check-config says plainly that the
    intervals cannot be kept and how far they stretch; its output is still a YAML configuration."""
    rid = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-{:012d}"
    config = {
        "foundry": {"base_url": "http://127.0.0.1:1", "auth": {"token": SENTINEL}},
        "deployments": [{"rid": rid.format(i), "name": f"d{i}"} for i in range(100)],
        "polling": {"interval": "1s", "requests_per_second": 10},
    }
    path = tmp_path / "monitor.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("# request demand:")]
    assert "6,000 requests/min of 540/min" in line
    assert "CANNOT be kept" in line
    assert "11.1s apart instead of 1s" in line
    assert len(yaml.safe_load(result.stdout)["deployments"]) == 100


def _offline_config(tmp_path: Path, state: dict[str, str]) -> Path:
    """A valid configuration whose Foundry, server and state would all be touched if the service started."""
    path = tmp_path / "monitor.yaml"
    config = {
        "foundry": {"base_url": "http://127.0.0.1:1", "auth": {"token": SENTINEL}},
        "deployments": ["ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"],
        "server": {"listen": "127.0.0.1:0"},
        "sinks": {"stdout": False},
        "state": state,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("flags", "pod", "message"),
    [
        (["--shard", "3", "--total-shards", "3"], None, "shard 3 is not one of the 3 shards (0 to 2)"),
        (["--shard", "-1", "--total-shards", "3"], None, "shard -1 is not one of the 3 shards (0 to 2)"),
        (["--shard", "0", "--total-shards", "0"], None, "the shard count must be at least 1, not 0"),
        (["--shard", "1"], None, "--shard and --total-shards go together"),
        (["--total-shards", "2"], None, "--shard and --total-shards go together"),
        (["--shard", "two", "--total-shards", "3"], None, "--shard takes a shard number or auto, not 'two'"),
        (
            ["--shard", "auto", "--total-shards", "3"],
            "foundry-monitor",
            "--shard auto, from POD_NAME: cannot take a shard number from 'foundry-monitor': "
            "expected <name>-<ordinal>",
        ),
        (
            ["--shard", "auto", "--total-shards", "3"],
            "foundry-monitor-3",
            "--shard auto, from POD_NAME: shard 3 is not one of the 3 shards (0 to 2)",
        ),
    ],
)
@pytest.mark.parametrize("command", ["run", "once"])
def test_a_bad_shard_is_refused_with_exit_2_before_anything_starts(
    tmp_path: Path, command: str, flags: list[str], pod: str | None, message: str
) -> None:
    """A shard outside 0..M-1, a count below 1, one flag without the other, a number that is not one, and a
    pod name without a fitting ordinal: exit 2 with one line saying why, and no state file is created."""
    state = tmp_path / "monitor.sqlite3"
    config = _offline_config(tmp_path, {"path": str(state)})
    result = run_cli(command, "--config", str(config), *flags, env={"POD_NAME": pod or ""})
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"foundry-monitor: {message}\n"
    assert list(tmp_path.iterdir()) == [config]


def test_sharding_a_postgres_state_is_refused_before_connecting(tmp_path: Path) -> None:
    """state.backend postgres with --shard exits 2 saying static sharding needs a state file per shard; the
    database (a closed port) is never tried, so the error is not a connection failure."""
    config = _offline_config(tmp_path, {"backend": "postgres", "dsn": "postgresql://monitor@127.0.0.1:1/m"})
    result = run_cli("run", "--config", str(config), "--shard", "0", "--total-shards", "2")
    assert result.returncode == 2
    assert result.stderr == (
        "foundry-monitor: static sharding needs state.backend sqlite (a state file per shard); "
        "state.backend is postgres\n"
    )


async def test_once_with_shards_polls_each_shards_share_and_together_the_fleet(tmp_path: Path) -> None:
    """once --shard N --total-shards 3 (N given, or auto from POD_NAME) polls a disjoint share of the
    configured and discovered deployments, and the three shares make the whole fleet."""
    import json

    import anyio

    from monitor.simulator.fleet import Rates
    from monitor.simulator.server import SimulatorSettings, running_simulator

    settings = SimulatorSettings(size=30, seed=3, rates=Rates(), tokens=("cli-token",))
    async with running_simulator(settings) as sim:
        model = next(m for m in sim.fleet.models if len(sim.fleet.deployments_of(m)) > 1)
        discovered = set(sim.fleet.deployments_of(model))
        static = [rid for rid in sim.fleet.rids if rid not in discovered]
        path = _sim_config(tmp_path, sim.base_url, static)
        path.write_text(path.read_text() + f"discover:\n  - model_rid: {model}\n")
        shares = []
        for index, flags, pod in (
            (0, ["--shard", "0"], ""),
            (1, ["--shard", "auto"], "foundry-monitor-1"),
            (2, ["--shard", "2"], ""),
        ):
            args = ["once", "--config", str(path), "--output", "json", *flags, "--total-shards", "3"]
            call = functools.partial(run_cli, *args, env={"POD_NAME": pod})
            result = await anyio.to_thread.run_sync(call)
            rows = json.loads(result.stdout)["deployments"]
            assert all(row["state"] not in ("UNREACHABLE", "NOT_FOUND") for row in rows), (index, rows)
            shares.append({row["rid"] for row in rows})
    assert all(shares)
    assert sum(len(share) for share in shares) == len(set().union(*shares))
    assert set().union(*shares) == {*static, *discovered}


def test_shard_auto_reads_pod_name_first_then_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """--shard auto takes the ordinal of POD_NAME when it is set, else of the host name (which a
    StatefulSet pod's is), and says which it read when neither has one."""
    from monitor.cli import shard_of
    from monitor.partition import Shard, ShardError

    monkeypatch.setattr("monitor.cli.socket.gethostname", lambda: "foundry-monitor-2")
    assert shard_of("auto", 3, {"POD_NAME": "foundry-monitor-1"}) == Shard(1, 3)
    assert shard_of("auto", 3, {}) == Shard(2, 3)
    assert shard_of("auto", 3, {"POD_NAME": " "}) == Shard(2, 3)
    assert shard_of(None, None, {"POD_NAME": "foundry-monitor-1"}) is None
    monkeypatch.setattr("monitor.cli.socket.gethostname", lambda: "laptop")
    with pytest.raises(ShardError, match="from the host name: cannot take a shard number from 'laptop'"):
        shard_of("auto", 3, {})


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_run_with_an_unreachable_database_exits_3_with_one_line_naming_backend_and_host(
    tmp_path: Path, fmt: str
) -> None:
    """run against a PostgreSQL state on a closed loopback port: exit 3 (not 2, a bad configuration) and one
    error line on stderr saying the state database is unavailable, with the backend and the host, and
    neither a traceback nor the password."""
    port = _closed_port()
    password = "pg-SENTINEL-91c3"
    config = _offline_config(
        tmp_path, {"backend": "postgres", "dsn": f"postgresql://monitor@127.0.0.1:{port}/m?sslmode=disable"}
    )
    text = yaml.safe_load(config.read_text())
    text["state"]["password"] = password
    text["logging"] = {"format": fmt}
    config.write_text(yaml.safe_dump(text))
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 3, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert password not in result.stderr + result.stdout
    assert "sslmode" not in result.stderr
    if fmt == "json":
        line = json.loads(lines[0])
        assert line["level"] == "error"
        assert line["event"] == "state_database_unavailable"
        assert line["backend"] == "postgres"
        assert line["host"] == f"127.0.0.1:{port}"
        assert "Connect" in line["error"] or "refused" in line["error"], line
    else:
        assert "state_database_unavailable" in lines[0]
        assert f"host=127.0.0.1:{port}" in lines[0]


#: Runs a command through ``monitor.cli.main``, then says whether the simulator was imported.
_LOADED = (
    "import sys\n"
    "from monitor.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print('exit', code, 'simulator', 'monitor.simulator' in sys.modules)\n"
)


def test_only_the_simulate_command_imports_the_simulator() -> None:
    """Monitor commands run without the bundled simulator in memory; ``simulate`` still takes (and
    documents) its own options."""
    checked = subprocess.run(
        [sys.executable, "-c", _LOADED, "check-config", "config/monitor.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "FOUNDRY_HOSTNAME": "acme.example.com", "FOUNDRY_TOKEN": SENTINEL},
        timeout=60,
        check=False,
    )
    assert checked.stdout.splitlines()[-1] == "exit 0 simulator False", checked.stderr
    helped = subprocess.run(
        [sys.executable, "-c", _LOADED, "simulate", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert "--size" in helped.stdout
    assert "--churn" in helped.stdout
    assert helped.stdout.splitlines()[-1] == "exit 0 simulator True"


#: Modules that only a request (a status page, feed or badge, a basic auth check), another command or another
#: state backend (PostgreSQL's driver) needs.
_ON_DEMAND = ("jinja2", "xml.etree.ElementTree", "xml.sax.saxutils", "bcrypt", "monitor.simulator", "asyncpg")


def test_the_run_command_starts_without_what_only_a_request_needs() -> None:
    """Importing everything ``run`` uses and building its parser loads none of the modules that wait for
    their first request or another backend (about 8.5 MB of RSS together)."""
    script = (
        "import sys\n"
        "import monitor.cli, monitor.service\n"
        "monitor.cli.build_parser('run')\n"
        f"print(sorted(m for m in {_ON_DEMAND!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
