"""Tests for monitor.config: the example files, every kind of problem by key path, secrets, durations."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bcrypt
import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from monitor.config import Config, ConfigError, config_hash, config_schema, load_config, masked, parse_config
from monitor.config.fields import MASK, format_duration, parse_duration
from monitor.config.model import (
    AuthConfig,
    DeploymentConfig,
    DiscoverConfig,
    StdoutConfig,
    fields_of,
    secret_fields,
)
from monitor.formats import EventFormat
from monitor.shaping import FlapMode, Shaping

ROOT = Path(__file__).resolve().parents[1]
RID = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000001"
RID2 = "ri.foundry-ml-live.main.live-deployment.00000000-0000-4000-8000-000000000002"
MODEL = "ri.models.main.model.00000000-0000-4000-8000-00000000000a"
SECRET = "tok-SENTINEL-7d3a"
EXISTING = str(ROOT / "pyproject.toml")
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


def config_data(**sections: Any) -> dict[str, Any]:
    """A minimal valid configuration, with whole top-level sections replaced by ``sections``."""
    data: dict[str, Any] = {
        "foundry": {"base_url": "https://foundry.example.com", "auth": {"token": SECRET}},
        "deployments": [{"rid": RID}],
    }
    data.update(copy.deepcopy(sections))
    return data


def problems_of(data: object, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, environ=environ or {})
    return info.value.problems


def outcome_of(function: Callable[..., Config], argument: Any) -> Config | ConfigError:
    try:
        return function(argument, environ={})
    except ConfigError as exc:
        return exc


def has_problem(problems: tuple[str, ...], path: str, fragment: str) -> bool:
    return any(p.startswith(f"{path}: ") and fragment in p for p in problems)


# --- the example files ------------------------------------------------------------------------------------


def test_the_production_example_parses_with_its_environment_variables() -> None:
    """config/monitor.yaml loads with FOUNDRY_HOSTNAME and FOUNDRY_TOKEN set, interpolating both."""
    config = load_config(
        ROOT / "config" / "monitor.yaml",
        environ={"FOUNDRY_HOSTNAME": "acme.palantirfoundry.com", "FOUNDRY_TOKEN": SECRET},
    )
    assert config.foundry.base_url == "https://acme.palantirfoundry.com"
    assert config.foundry.auth.method == "token"
    assert config.foundry.auth.token == SECRET
    assert len(config.deployments) == 3
    assert config.deployments[0].name == "fraud-scorer"
    assert [d.model_rid for d in config.discover] == [
        "ri.models.main.model.5e0f3c9a-1b2d-4c6e-9f80-7a1b2c3d4e5f"
    ]
    assert config.label_names == ("env", "team")
    assert len(config.sinks.webhooks) == 1
    assert config.source.endswith("monitor.yaml")


def test_the_production_example_fails_without_its_token() -> None:
    """Without FOUNDRY_TOKEN the example names the token's key path and the missing variable."""
    problems = problems_of(
        yaml.safe_load((ROOT / "config" / "monitor.yaml").read_text()),
        {"FOUNDRY_HOSTNAME": "acme.palantirfoundry.com"},
    )
    assert problems == (
        "foundry.auth.token: environment variable FOUNDRY_TOKEN is not set (and no "
        "${FOUNDRY_TOKEN:-default})",
    )


def test_the_demo_config_targets_the_local_simulator() -> None:
    """config/demo.yaml needs no environment and points at the simulator over explicit http on loopback."""
    config = load_config(ROOT / "config" / "demo.yaml", environ={})
    assert config.foundry.base_url == "http://127.0.0.1:9709"
    assert config.foundry.auth.token == "demo-token"
    assert (config.polling.interval, config.polling.fast_interval) == (10.0, 2.0)
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9708)
    assert config.sinks.stdout == StdoutConfig()
    assert config.sinks.file is not None
    assert config.sinks.file.path == "./state/events.jsonl"
    assert config.state.path == "./state/monitor.sqlite3"
    assert len(config.deployments) >= 1
    override = load_config(ROOT / "config" / "demo.yaml", environ={"FOUNDRY_TOKEN": "other"})
    assert override.foundry.auth.token == "other"


def test_defaults_are_the_documented_ones() -> None:
    """A minimal configuration gets every documented default."""
    config = parse_config(config_data(), environ={})
    f = config.foundry
    assert (f.timeouts.connect, f.timeouts.read, f.timeouts.total) == (5.0, 10.0, 30.0)
    assert (f.tls.ca_bundle, f.tls.insecure_skip_verify) == (None, False)
    retries = f.retries
    assert (retries.attempts, retries.backoff_initial, retries.backoff_max, retries.retry_after_max) == (
        3,
        0.2,
        10.0,
        60.0,
    )
    assert f.max_body_bytes == 1048576
    assert f.auth.scope == "api:models-read"
    assert f.auth.token_url == "https://foundry.example.com/multipass/api/oauth2/token"
    p = config.polling
    assert (p.interval, p.fast_interval, p.jitter, p.concurrency, p.requests_per_second) == (
        30,
        5,
        0.1,
        32,
        50,
    )
    assert (p.unreachable_after, p.staleness, p.error_backoff_max) == (3, 90.0, 300.0)
    assert tuple(p.breaker.model_dump().values()) == (1.0, 10, 60.0, 30.0)
    assert (config.server.host, config.server.port, config.server.basic_auth) == ("0.0.0.0", 9708, ())  # noqa: S104
    assert (config.sinks.stdout, config.sinks.file, config.sinks.webhooks) == (StdoutConfig(), None, ())
    assert config.sinks.events_buffer == 1000
    assert config.state.path == "./state/monitor.sqlite3"
    assert (config.logging.level, config.logging.format) == ("info", "auto")
    assert config.deployments[0].name == RID


def test_a_replicas_lease_defaults_to_15_s_and_its_heartbeat_to_a_third_of_the_lease() -> None:
    """state.lease is 15 s unless set; state.heartbeat follows it at a third unless set itself."""

    def state(**settings: str) -> tuple[float, float]:
        parsed = parse_config(config_data(state=settings), environ={}).state
        return parsed.lease, parsed.heartbeat

    assert state() == (15.0, 5.0)
    assert state(lease="3s") == (3.0, 1.0)
    assert state(lease="3s", heartbeat="500ms") == (3.0, 0.5)


def test_rollout_settings_default_to_five_and_fifteen_minutes_and_take_short_durations() -> None:
    """Branch versions are listed every 5 minutes and a rollout is stuck after 15 by default; tests and
    demos may shorten both below a second."""
    p = parse_config(config_data(), environ={}).polling
    assert (p.versions_interval, p.rollout_grace) == (300.0, 900.0)
    short = parse_config(
        config_data(polling={"versions_interval": "200ms", "rollout_grace": "1s"}), environ={}
    ).polling
    assert (short.versions_interval, short.rollout_grace) == (0.2, 1.0)


def test_the_config_is_deeply_frozen() -> None:
    """Attributes cannot be reassigned and collections are tuples, not lists."""
    config = parse_config(config_data(deployments=[{"rid": RID, "labels": {"team": "risk"}}]), environ={})
    with pytest.raises(ValidationError, match="frozen"):
        config.polling.interval = 1.0  # type: ignore[misc]
    assert isinstance(config.deployments, tuple)
    assert isinstance(config.deployments[0].labels, tuple)
    assert hash(config) == hash(
        parse_config(config_data(deployments=[{"rid": RID, "labels": {"team": "risk"}}]), environ={})
    )


# --- problems by key path ---------------------------------------------------------------------------------


def foundry(**settings: Any) -> dict[str, Any]:
    """A valid ``foundry`` section with ``settings`` added or replaced."""
    return {"foundry": {"base_url": "https://f.example.com", "auth": {"token": "t"}, **settings}}


def webhook(**settings: Any) -> dict[str, Any]:
    """A ``sinks`` section with one valid webhook with ``settings`` added or replaced."""
    return {"sinks": {"webhooks": [{"url": "https://x.example.com", **settings}]}}


PROBLEM_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"deployments": [{"rid": "ri.bad"}]}, "deployments[0].rid", "does not match the RID pattern"),
    ({"deployments": [{"name": "x"}]}, "deployments[0].rid", "required"),
    ({"deployments": [{"rid": RID}, {"rid": RID}]}, "deployments[1].rid", "duplicate"),
    ({"deployments": [{"rid": RID, "name": "a\nb"}]}, "deployments[0].name", "control characters"),
    ({"deployments": [{"rid": RID, "name": "  "}]}, "deployments[0].name", "must not be empty"),
    ({"deployments": [{"rid": RID, "labels": {"rid": "x"}}]}, "deployments[0].labels.rid", "reserved"),
    ({"deployments": [{"rid": RID, "labels": {"le": "x"}}]}, "deployments[0].labels.le", "reserved"),
    ({"deployments": [{"rid": RID, "labels": {"__x": "y"}}]}, "deployments[0].labels.__x", "__"),
    ({"deployments": [{"rid": RID, "labels": {"a-b": "y"}}]}, "deployments[0].labels.a-b", "label name"),
    (
        {"deployments": [{"rid": RID, "labels": {"on": True}}]},
        "deployments[0].labels.on",
        "expected a string",
    ),
    ({"deployments": [{"rid": RID, "nmae": "x"}]}, "deployments[0].nmae", "did you mean 'name'"),
    ({"deployments": {"rid": RID}}, "deployments", "expected a list, got a mapping"),
    ({"deployments": [], "discover": []}, "deployments", "at least one"),
    ({"discover": [{"branch": "master"}]}, "discover[0].model_rid", "required"),
    ({"discover": [{"model_rid": MODEL}, {"model_rid": MODEL}]}, "discover[1]", "duplicate"),
    (
        {"discover": [{"model_rid": MODEL, "interval": "often"}]},
        "discover[0].interval",
        "expected a duration",
    ),
    ({"polling": {"interval": "fast"}}, "polling.interval", "expected a duration like 30s or 5m, got 'fast'"),
    ({"polling": {"interval": "0s"}}, "polling.interval", "longer than 0s"),
    ({"polling": {"interval": "60d"}}, "polling.interval", "at most 30d"),
    ({"polling": {"interval": "10s", "fast_interval": "20s"}}, "polling.fast_interval", "polling.interval"),
    ({"polling": {"jitter": 0.6}}, "polling.jitter", "between 0 and 0.5"),
    ({"polling": {"concurrency": 0}}, "polling.concurrency", "between 1 and 10000"),
    ({"polling": {"concurrency": 10001}}, "polling.concurrency", "between 1 and 10000"),
    ({"polling": {"concurrency": 2.5}}, "polling.concurrency", "whole number"),
    ({"polling": {"concurrency": "9" * 5000}}, "polling.concurrency", "whole number"),
    ({"polling": {"interval": "\u0661\u0660s"}}, "polling.interval", "expected a duration"),
    ({"server": {"listen": "0.0.0.0:\u0661"}}, "server.listen", "port"),
    ({"polling": {"requests_per_second": 0}}, "polling.requests_per_second", "more than 0"),
    ({"polling": {"unreachable_after": 0}}, "polling.unreachable_after", "between 1 and 1000"),
    ({"polling": {"staleness": "10s"}}, "polling.staleness", "shorter than polling.interval"),
    ({"polling": {"error_backoff_max": "10s"}}, "polling.error_backoff_max", "shorter than"),
    ({"polling": {"breaker": {"failure_ratio": 0}}}, "polling.breaker.failure_ratio", "more than 0"),
    ({"polling": {"breaker": {"min_polls": "many"}}}, "polling.breaker.min_polls", "whole number"),
    ({"polling": {"intervall": "5s"}}, "polling.intervall", "did you mean 'interval'"),
    ({"polling": [1]}, "polling", "expected a mapping, got a list"),
    ({"server": {"listen": "9708"}}, "server.listen", "host:port"),
    ({"server": {"listen": "0.0.0.0:99999"}}, "server.listen", "port"),
    ({"server": {"listen": "::1:9708"}}, "server.listen", "brackets"),
    ({"server": {"listen": ["::"]}}, "server.listen", "quote"),
    ({"server": {"tls": {"cert_file": EXISTING}}}, "server.tls.key_file", "required"),
    ({"polling": {1: "x"}}, "polling[1]", "keys must be strings, got 1"),
    ({"server": {"basic_auth": {"admin": "hunter2"}}}, "server.basic_auth.admin", "bcrypt"),
    ({"server": {"basic_auth": ["admin"]}}, "server.basic_auth", "expected a mapping"),
    ({"sinks": {"webhooks": [{"timeout": "5s"}]}}, "sinks.webhooks[0].url", "required"),
    ({"sinks": {"webhooks": [{"url": "ftp://x.example.com"}]}}, "sinks.webhooks[0].url", "http"),
    (webhook(queue_size=0), "sinks.webhooks[0].queue_size", "between"),
    (webhook(headers={"Bad Name": "v"}), "sinks.webhooks[0].headers", "header name, got 'Bad Name'"),
    (webhook(headers={"A": "x", "a": "y"}), "sinks.webhooks[0].headers.a", "duplicate"),
    ({"sinks": {"file": {}}}, "sinks.file.path", "required"),
    ({"sinks": {"stdout": "maybe"}}, "sinks.stdout", "true or false"),
    ({"sinks": {"stdout": {"format": "xml"}}}, "sinks.stdout.format", "cloudevents"),
    ({"sinks": {"file": {"path": "e.jsonl", "flaps": "hide"}}}, "sinks.file.flaps", "drop"),
    (webhook(min_duration="soon"), "sinks.webhooks[0].min_duration", "duration"),
    ({"sinks": {"alertmanager": {"resend_interval": "1m"}}}, "sinks.alertmanager.url", "required"),
    ({"sinks": {"events_buffer": -1}}, "sinks.events_buffer", "between"),
    ({"state": {"path": ""}}, "state.path", "must not be empty"),
    ({"state": {"lease": "3s", "heartbeat": "3s"}}, "state.heartbeat", "shorter than lease"),
    (
        {"logging": {"level": "verbose"}},
        "logging.level",
        "expected one of 'debug', 'info', 'warning' or 'error'",
    ),
    ({"logging": {"format": "xml"}}, "logging.format", "expected one of 'auto', 'json' or 'console'"),
    ({"surprise": 1}, "surprise", "unknown key"),
    (foundry(timeouts={"connect": "40s"}), "foundry.timeouts.connect", "foundry.timeouts.total"),
    (foundry(retries={"attempts": 0}), "foundry.retries.attempts", "between 1 and 20"),
    (
        foundry(retries={"backoff_initial": "1m", "backoff_max": "1s"}),
        "foundry.retries.backoff_max",
        "shorter",
    ),
    (foundry(max_body_bytes=10), "foundry.max_body_bytes", "between"),
    (foundry(tls={"ca_bundle": "/nonexistent.pem"}), "foundry.tls.ca_bundle", "no such file"),
    (foundry(tls={"insecure_skip_verify": "sometimes"}), "foundry.tls.insecure_skip_verify", "true or false"),
    (foundry(timout={}), "foundry.timout", "did you mean 'timeouts'"),
    (foundry(auth="t"), "foundry.auth", "expected a mapping, got a string"),
    ({"foundry": "https://f.example.com"}, "foundry", "expected a mapping, got a string"),
    (foundry(auth={"token_file": "/nonexistent/token"}), "foundry.auth.token_file", "no such file"),
    (foundry(auth={"client_id": "svc"}), "foundry.auth.client_secret", "required with client_id"),
    (foundry(auth={"token": "t", "token_file": EXISTING}), "foundry.auth", "exactly one"),
    # YAML's true is no count and 2.0 no whole number: neither may pass as 1 or 2 (nor true as a ratio).
    ({"polling": {"concurrency": True}}, "polling.concurrency", "expected a whole number, got a boolean"),
    (
        {"polling": {"unreachable_after": 2.0}},
        "polling.unreachable_after",
        "expected a whole number, got 2.0",
    ),
    (foundry(retries={"attempts": False}), "foundry.retries.attempts", "whole number, got a boolean"),
    (webhook(max_retries=1.0), "sinks.webhooks[0].max_retries", "expected a whole number, got 1.0"),
    ({"polling": {"jitter": True}}, "polling.jitter", "expected a number, got a boolean"),
    (
        {"polling": {"breaker": {"failure_ratio": True}}},
        "polling.breaker.failure_ratio",
        "number, got a boolean",
    ),
]


@pytest.mark.parametrize(("sections", "path", "fragment"), PROBLEM_CASES, ids=[c[1] for c in PROBLEM_CASES])
def test_each_mistake_is_one_problem_named_by_its_key_path(
    sections: dict[str, Any], path: str, fragment: str
) -> None:
    """A single mistake is reported exactly once, under its key path, with a message that says what is wrong."""
    problems = problems_of(config_data(**sections))
    assert len(problems) == 1, problems
    assert has_problem(problems, path, fragment), problems


def test_whole_numbers_and_numbers_still_take_digits_from_the_environment() -> None:
    """Digit strings, as ${VAR} interpolation yields them, are read as numbers; integers as numbers too."""
    data = config_data(polling={"concurrency": "${N}", "jitter": "${J}", "requests_per_second": 7})
    polling = parse_config(data, environ={"N": "12", "J": "0.25"}).polling
    assert (polling.concurrency, polling.jitter, polling.requests_per_second) == (12, 0.25, 7.0)
    assert isinstance(polling.concurrency, int)


def test_every_problem_is_reported_at_once() -> None:
    """Validation collects problems from every section instead of stopping at the first."""
    data = config_data(
        deployments=[{"rid": "not-a-rid"}, {"rid": RID, "labels": {"state": "x"}}],
        polling={"interval": "fast", "concurrency": 0},
        server={"listen": "nowhere"},
        sinks={"webhooks": [{"timeout": "5s"}]},
        logging={"level": "loud"},
        extra=True,
    )
    problems = problems_of(data)
    expected = [
        "deployments[0].rid",
        "deployments[1].labels.state",
        "polling.interval",
        "polling.concurrency",
        "server.listen",
        "sinks.webhooks[0].url",
        "logging.level",
        "extra",
    ]
    for path in expected:
        assert any(p.startswith(f"{path}: ") for p in problems), path
    assert len(problems) == len(expected)
    text = str(ConfigError(problems))
    assert text.startswith(f"{len(expected)} configuration problems:")
    assert all(problem in text for problem in problems)


def test_a_top_level_that_is_not_a_mapping_is_a_problem() -> None:
    """Lists, scalars and an empty document at the top level are reported with the source name."""
    for data, got in (([1], "a list"), ("text", "a string"), (None, "an empty document")):
        with pytest.raises(ConfigError) as info:
            parse_config(data, environ={}, source="x.yaml")
        assert info.value.problems == (f"x.yaml: expected a mapping at the top level, got {got}",)


def test_rid_problems_match_the_sdk_pattern() -> None:
    """RIDs the SDK's pattern accepts are accepted, including a bare string shorthand for a deployment."""
    config = parse_config(config_data(deployments=[RID, {"rid": RID2, "name": "second"}]), environ={})
    assert [(d.rid, d.name) for d in config.deployments] == [(RID, RID), (RID2, "second")]
    problems = problems_of(config_data(deployments=["ri..x"]))
    assert has_problem(problems, "deployments[0].rid", "does not match the RID pattern")


# --- labels -----------------------------------------------------------------------------------------------


def test_static_labels_form_one_label_set_and_missing_ones_are_empty() -> None:
    """label_names is the sorted union over deployments and discover entries; every entry carries all of them."""
    config = parse_config(
        config_data(
            deployments=[
                {"rid": RID, "labels": {"team": "risk"}},
                {"rid": RID2, "labels": {"env": "prod", "tier": 1}},
            ],
            discover=[{"model_rid": MODEL, "labels": {"region": "eu"}}],
        ),
        environ={},
    )
    assert config.label_names == ("env", "region", "team", "tier")
    assert config.deployments[0].labels == (("env", ""), ("region", ""), ("team", "risk"), ("tier", ""))
    assert config.deployments[1].labels == (("env", "prod"), ("region", ""), ("team", ""), ("tier", "1"))
    assert config.discover[0].labels == (("env", ""), ("region", "eu"), ("team", ""), ("tier", ""))


@pytest.mark.parametrize(
    "name",
    [
        "rid",
        "deployment",
        "state",
        "from_state",
        "to_state",
        "field",
        "error",
        "model_rid",
        "model_version_rid",
        "branch",
        "gpu_type",
        "le",
        "quantile",
    ],
)
def test_every_reserved_label_is_refused(name: str) -> None:
    """Static labels may not clash with a label the monitor sets on its series."""
    problems = problems_of(config_data(discover=[{"model_rid": MODEL, "labels": {name: "x"}}]))
    assert has_problem(problems, f"discover[0].labels.{name}", "reserved")


# --- interpolation ----------------------------------------------------------------------------------------


def test_variables_defaults_and_escapes_are_interpolated() -> None:
    """${VAR} reads the environment, ${VAR:-x} falls back when unset or empty, and $${ is a literal ${."""
    data = config_data(
        foundry={"base_url": "${HOST}", "auth": {"token": "${TOKEN}"}},
        deployments=[
            {"rid": RID, "name": "${NAME:-fallback}", "labels": {"a": "${EMPTY:-dflt}", "b": "x$${NOT}y"}}
        ],
        polling={"interval": "${INTERVAL:-1m}", "concurrency": "${CONCURRENCY}"},
        state={"path": "${DIR}/state.db"},
    )
    env = {"HOST": "f.example.com", "TOKEN": SECRET, "EMPTY": "", "CONCURRENCY": "8", "DIR": "/var/lib"}
    config = parse_config(data, environ=env)
    assert config.foundry.base_url == "https://f.example.com"
    assert config.foundry.auth.token == SECRET
    assert config.deployments[0].name == "fallback"
    assert dict(config.deployments[0].labels) == {"a": "dflt", "b": "x${NOT}y"}
    assert config.polling.interval == 60.0
    assert config.polling.concurrency == 8
    assert config.state.path == "/var/lib/state.db"


def test_a_missing_variable_is_one_problem_at_its_key_path() -> None:
    """An unset variable without default is named with its key path, and nothing else is reported for it."""
    data = config_data(
        deployments=[{"rid": "${DEPLOYMENT_RID}"}],
        sinks={
            "webhooks": [{"url": "https://h.example.com", "headers": {"Authorization": "Bearer ${HOOK}"}}]
        },
    )
    problems = problems_of(data)
    assert problems == (
        "deployments[0].rid: environment variable DEPLOYMENT_RID is not set (and no ${DEPLOYMENT_RID:-default})",
        "sinks.webhooks[0].headers.Authorization: environment variable HOOK is not set (and no ${HOOK:-default})",
    )


def test_a_set_but_empty_variable_without_default_is_empty() -> None:
    """${VAR} of an empty variable is the empty string, which then fails the field's own check."""
    problems = problems_of(
        config_data(foundry={"base_url": "https://f.example.com", "auth": {"token": "${T}"}}), {"T": ""}
    )
    assert problems == ("foundry.auth.token: must not be empty",)


@pytest.mark.parametrize("text", ["${}", "${1ABC}", "${A B}", "${UNCLOSED", "${A:default}"])
def test_a_malformed_reference_is_a_problem(text: str) -> None:
    """A reference that is not ${NAME} or ${NAME:-default} is reported rather than passed through."""
    problems = problems_of(config_data(state={"path": text}), {"A": "x"})
    assert has_problem(problems, "state.path", "malformed reference")


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an ``environ`` argument, os.environ is read."""
    monkeypatch.setenv("MONITOR_TEST_TOKEN", SECRET)
    data = config_data(
        foundry={"base_url": "https://f.example.com", "auth": {"token": "${MONITOR_TEST_TOKEN}"}}
    )
    assert parse_config(data).foundry.auth.token == SECRET


# --- durations --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1m30s", 90.0),
        ("1h0m5s", 3605.0),
        ("1d2h3m4s5ms", 93784.005),
        ("0.2s", 0.2),
        ("1.5h", 5400.0),
        (" 10s ", 10.0),
        ("45", 45.0),
        ("2.5", 2.5),
        (45, 45.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_durations_parse_to_seconds(text: str | int | float, seconds: float) -> None:
    """Units ms, s, m, h and d, their combinations, and bare numbers of seconds."""
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    "text",
    [
        "fast",
        "",
        "s",
        "5x",
        "-5s",
        "-1",
        "30s5m",
        "5m5m",
        "1.2.3s",
        "1 m",
        "nan",
        "inf",
        "1_000s",
        "5sec",
        "m5",
    ],
)
def test_invalid_duration_strings_raise(text: str) -> None:
    """Anything but a well-formed duration raises ValueError."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, -1, -0.5, math.nan, math.inf, 10**400, None, [1]])
def test_invalid_duration_values_raise_value_error(value: Any) -> None:
    """Booleans, negative, non-finite and non-numeric values raise ValueError too."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@given(
    st.floats(min_value=0, allow_nan=False, allow_infinity=False) | st.integers(min_value=0, max_value=10**15)
)
def test_seconds_written_as_xs_round_trip(seconds: float) -> None:
    """Any non-negative number of seconds formatted as ``{x}s`` parses back to exactly that number."""
    assert parse_duration(f"{seconds}s") == seconds


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False) | st.integers(min_value=0, max_value=10**9))
def test_format_duration_round_trips(seconds: float) -> None:
    """format_duration writes what parse_duration reads back exactly."""
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.text(alphabet="abcxyz!?-_ :/", min_size=0, max_size=12))
def test_text_without_digits_is_never_a_duration(text: str) -> None:
    """Strings without a number in them are rejected, whatever their shape."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration_uses_the_largest_units() -> None:
    """Whole seconds are split into d, h, m and s; fractions are written in seconds."""
    assert [format_duration(s) for s in (0, 0.2, 90, 3600, 86400 + 61)] == [
        "0s",
        "0.2s",
        "1m30s",
        "1h",
        "1d1m1s",
    ]


# --- secrets ----------------------------------------------------------------------------------------------


def secret_config() -> Config:
    return parse_config(
        config_data(
            foundry={
                "base_url": "https://f.example.com",
                "auth": {"client_id": "svc", "client_secret": SECRET},
            },
            server={"basic_auth": {"prometheus": HASH}},
            sinks={
                "webhooks": [
                    {"url": f"https://hooks.example.com/services/{SECRET}", "headers": {"X-Key": SECRET}},
                ],
                "alertmanager": {"url": "http://am.example.com:9093"},
            },
        ),
        environ={},
    )


def test_secrets_are_masked_and_kept_out_of_repr() -> None:
    """masked() replaces every secret with ***; repr() of the config shows none of them."""
    config = secret_config()
    out = masked(config)
    dumped = yaml.safe_dump(out)
    for text in (dumped, repr(config), str(config)):
        assert SECRET not in text
        assert HASH not in text
    assert out["foundry"]["auth"] == {
        "client_id": "svc",
        "client_secret": MASK,
        "scope": "api:models-read",
        "token_url": "https://f.example.com/multipass/api/oauth2/token",
    }
    assert out["server"]["basic_auth"] == {"prometheus": MASK}
    hook = out["sinks"]["webhooks"][0]
    assert hook["headers"] == {"X-Key": MASK}
    assert hook["url"] == "https://hooks.example.com/***"
    assert out["sinks"]["alertmanager"]["url"] == "http://am.example.com:9093"
    assert config.sinks.webhooks[0].headers == (("X-Key", SECRET),)


def test_the_masked_configuration_reads_back_as_the_same_configuration() -> None:
    """What check-config prints is a configuration file: read again, it is the same configuration (secrets
    aside), defaults such as min_duration 0s included, and with no key the file may not hold."""
    config = parse_config(config_data(deployments=[{"rid": RID, "labels": {"team": "risk"}}]), environ={})
    again = parse_config(yaml.safe_load(yaml.safe_dump(masked(config))), environ={})
    assert masked(again) == masked(config)
    assert again.sinks.stdout == config.sinks.stdout
    assert again.label_names == ("team",)


def test_a_token_is_masked_and_a_token_file_path_is_shown(tmp_path: Path) -> None:
    """The token itself is masked; a token file's path is shown, its contents are never read into output."""
    token_file = tmp_path / "token"
    token_file.write_text(SECRET)
    by_token = parse_config(config_data(), environ={})
    assert masked(by_token)["foundry"]["auth"] == {"token": MASK}
    assert SECRET not in repr(by_token)
    by_file = parse_config(
        config_data(foundry={"base_url": "https://f.example.com", "auth": {"token_file": str(token_file)}}),
        environ={},
    )
    assert by_file.foundry.auth.method == "token_file"
    assert masked(by_file)["foundry"]["auth"] == {"token_file": str(token_file)}
    assert SECRET not in yaml.safe_dump(masked(by_file))


@pytest.mark.parametrize(
    ("sections", "path"),
    [
        (
            {"foundry": {"base_url": "https://f.example.com", "auth": {"token": f"a {SECRET}"}}},
            "foundry.auth.token",
        ),
        (
            {"foundry": {"base_url": "https://f.example.com", "auth": {"token": [SECRET]}}},
            "foundry.auth.token",
        ),
        (
            {
                "foundry": {
                    "base_url": "https://f.example.com",
                    "auth": {"client_id": "x", "client_secret": f"{SECRET}\n"},
                }
            },
            None,
        ),
        (
            {
                "foundry": {
                    "base_url": "https://f.example.com",
                    "auth": {"client_id": "x", "client_secret": f"{SECRET}\x00"},
                }
            },
            "foundry.auth.client_secret",
        ),
        (
            {"foundry": {"base_url": f"https://user:{SECRET}@f.example.com", "auth": {"token": "t"}}},
            "foundry.base_url",
        ),
        ({"server": {"basic_auth": {"admin": SECRET}}}, "server.basic_auth.admin"),
        (
            {
                "sinks": {
                    "webhooks": [{"url": "https://h.example.com", "headers": {"A": f"{SECRET}\r\nX: y"}}]
                }
            },
            "sinks.webhooks[0].headers.A",
        ),
        ({"sinks": {"webhooks": [{"url": f"gopher://h.example.com/{SECRET}"}]}}, "sinks.webhooks[0].url"),
        ({"sinks": {"webhooks": [{"url": f"https://h.example.com:{SECRET}/x"}]}}, "sinks.webhooks[0].url"),
    ],
)
def test_a_bad_secret_is_reported_without_its_value(sections: dict[str, Any], path: str | None) -> None:
    """A problem with a secret names its key path and never echoes the value (a trailing newline is fine)."""
    if path is None:
        config = parse_config(config_data(**sections), environ={})
        assert config.foundry.auth.client_secret == SECRET
        return
    with pytest.raises(ConfigError) as info:
        parse_config(config_data(**sections), environ={})
    assert any(p.startswith(f"{path}: ") for p in info.value.problems), info.value.problems
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


def test_yaml_errors_do_not_quote_the_offending_line(tmp_path: Path) -> None:
    """PyYAML's messages quote the broken line; the config error gives only the position."""
    path = tmp_path / "bad.yaml"
    path.write_text(f"foundry:\n  auth:\n    token: {SECRET}: oops\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: not valid YAML")
    assert "line 3" in problem
    assert SECRET not in problem


def test_config_hash_is_stable_short_and_follows_secrets_without_revealing_them() -> None:
    """Equal configs hash equally (wherever they were loaded from); changing a secret or a setting changes it."""
    first = config_hash(parse_config(config_data(), environ={}, source="a.yaml"))
    assert first == config_hash(parse_config(config_data(), environ={}, source="b.yaml"))
    assert len(first) == 16
    assert int(first, 16) >= 0
    other_token = config_data(foundry={"base_url": "https://foundry.example.com", "auth": {"token": "other"}})
    assert config_hash(parse_config(other_token, environ={})) != first
    assert config_hash(parse_config(config_data(polling={"interval": "31s"}), environ={})) != first
    # A plain digest of the masked form plus the secret would let anyone try candidate tokens quickly.
    body = yaml.safe_dump(masked(parse_config(config_data(), environ={})))
    assert hashlib.sha256((body + SECRET).encode()).hexdigest()[:16] != first


# --- base URL and authentication --------------------------------------------------------------------------


def with_foundry(base_url: str | None, **auth: str) -> dict[str, Any]:
    foundry: dict[str, Any] = {"auth": auth or {"token": "t"}}
    if base_url is not None:
        foundry["base_url"] = base_url
    return config_data(foundry=foundry)


@pytest.mark.parametrize(
    ("written", "effective"),
    [
        ("acme.palantirfoundry.com", "https://acme.palantirfoundry.com"),
        ("acme.palantirfoundry.com:8443", "https://acme.palantirfoundry.com:8443"),
        ("https://acme.palantirfoundry.com/", "https://acme.palantirfoundry.com"),
        ("HTTPS://Acme.PalantirFoundry.com", "https://acme.palantirfoundry.com"),
        ("http://127.0.0.1:9709", "http://127.0.0.1:9709"),
        ("http://[::1]:9709/", "http://[::1]:9709"),
        ("  https://acme.palantirfoundry.com  ", "https://acme.palantirfoundry.com"),
        ("https://bücher.example.com", "https://xn--bcher-kva.example.com"),
    ],
)
def test_base_url_is_normalized(written: str, effective: str) -> None:
    """A host name means https; http only when written out; the trailing slash is dropped; an international
    host name is IDNA-encoded."""
    config = parse_config(with_foundry(written), environ={})
    assert config.foundry.base_url == effective
    assert config.foundry.auth.token_url == effective + "/multipass/api/oauth2/token"


@pytest.mark.parametrize(
    ("written", "fragment"),
    [
        ("https://acme.palantirfoundry.com/api/v2", "without a path"),
        ("https://acme.palantirfoundry.com/?x=1", "without a path"),
        ("https://acme.palantirfoundry.com/#top", "without a path"),
        ("ftp://acme.palantirfoundry.com", "https://host"),
        ("https://", "invalid host"),
        ("https://acme.palantirfoundry.com:http", "invalid host or port"),
        ("https://ac me.example.com", "invalid host"),
        ("https://user:pw@acme.palantirfoundry.com", "credentials"),
    ],
)
def test_base_url_junk_is_refused(written: str, fragment: str) -> None:
    """Paths, queries, other schemes, bad hosts and credentials in the base URL are problems."""
    problems = problems_of(with_foundry(written))
    assert len(problems) == 1
    assert has_problem(problems, "foundry.base_url", fragment), problems


def test_foundry_hostname_is_the_fallback_base_url() -> None:
    """FOUNDRY_HOSTNAME is used only when base_url is absent; neither is a problem."""
    assert parse_config(
        with_foundry(None), environ={"FOUNDRY_HOSTNAME": "acme.example.com"}
    ).foundry.base_url == ("https://acme.example.com")
    written = parse_config(
        with_foundry("https://b.example.com"), environ={"FOUNDRY_HOSTNAME": "acme.example.com"}
    )
    assert written.foundry.base_url == "https://b.example.com"
    assert problems_of(with_foundry(None)) == (
        "foundry.base_url: required (or set FOUNDRY_HOSTNAME in the environment)",
    )
    bad = problems_of(with_foundry(None), {"FOUNDRY_HOSTNAME": "acme.example.com/path"})
    assert has_problem(bad, "foundry.base_url", "from FOUNDRY_HOSTNAME")


def test_authentication_falls_back_to_the_sdk_environment_variables() -> None:
    """Without an auth method in the file: FOUNDRY_TOKEN, else FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET."""
    data = config_data(
        foundry={"base_url": "https://f.example.com", "auth": {"scope": "api:models-read other"}}
    )
    by_token = parse_config(data, environ={"FOUNDRY_TOKEN": f"{SECRET}\n"}).foundry.auth
    assert (by_token.method, by_token.token) == ("token", SECRET)
    by_client = parse_config(
        data, environ={"FOUNDRY_CLIENT_ID": "svc", "FOUNDRY_CLIENT_SECRET": SECRET}
    ).foundry.auth
    assert (by_client.method, by_client.client_id, by_client.client_secret) == (
        "client_credentials",
        "svc",
        SECRET,
    )
    assert by_client.scope == "api:models-read other"
    no_section = config_data(foundry={"base_url": "https://f.example.com"})
    assert parse_config(no_section, environ={"FOUNDRY_TOKEN": "t"}).foundry.auth.token == "t"
    half = problems_of(no_section, {"FOUNDRY_CLIENT_ID": "svc"})
    assert half == ("foundry.auth: FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET must be set together",)
    (none,) = problems_of(no_section)
    assert none.startswith("foundry.auth: required")
    written = parse_config(config_data(), environ={"FOUNDRY_TOKEN": "from-env"}).foundry.auth
    assert written.token == SECRET


def test_client_credentials_take_an_explicit_token_url() -> None:
    """token_url may be set (any http(s) URL); it must be a URL."""
    data = with_foundry(
        "https://f.example.com", client_id="svc", client_secret="s", token_url="https://idp.example.com/token"
    )
    auth = parse_config(data, environ={}).foundry.auth
    assert auth == AuthConfig(
        client_id="svc", client_secret="s", scope="api:models-read", token_url="https://idp.example.com/token"
    )
    bad = problems_of(
        with_foundry("https://f.example.com", client_id="svc", client_secret="s", token_url="idp")
    )
    assert has_problem(bad, "foundry.auth.token_url", "http")


# --- server, sinks ---------------------------------------------------------------------------------------


def test_listen_addresses_including_ipv6() -> None:
    """host:port, a bracketed IPv6 address, and port 0 (OS-assigned) are accepted."""
    for listen, expected in (
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::]:9708", ("::", 9708)),
        ("localhost:80", ("localhost", 80)),
    ):
        config = parse_config(config_data(server={"listen": listen}), environ={})
        assert (config.server.host, config.server.port) == expected
    assert (
        masked(parse_config(config_data(server={"listen": "[::]:9708"}), environ={}))["server"]["listen"]
        == "[::]:9708"
    )


def test_server_tls_and_basic_auth_are_accepted_when_valid(tmp_path: Path) -> None:
    """Existing cert and key files, and bcrypt hashes, make a valid server section."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("cert")
    key.write_text("key")
    config = parse_config(
        config_data(
            server={"tls": {"cert_file": str(cert), "key_file": str(key)}, "basic_auth": {"prom": HASH}}
        ),
        environ={},
    )
    assert config.server.tls is not None
    assert (config.server.tls.cert_file, config.server.tls.key_file) == (str(cert), str(key))
    assert config.server.basic_auth == (("prom", HASH),)
    missing = problems_of(
        config_data(server={"tls": {"cert_file": str(cert), "key_file": str(tmp_path / "nope")}})
    )
    assert has_problem(missing, "server.tls.key_file", "no such file")


def test_each_sink_takes_its_format_and_shaping() -> None:
    """stdout takes true, false or a mapping; the file and each webhook take format and the shaping settings;
    stdout: false is written out as false (null would read back as left out: on)."""
    config = parse_config(
        config_data(
            sinks={
                "stdout": {"format": "CloudEvents", "recovery": True},
                "file": {"path": "e.jsonl", "min_duration": "2m", "flaps": "drop"},
                "webhooks": [{"url": "https://h.example.com/x", "format": "cloudevents"}],
            }
        ),
        environ={},
    )
    sinks = config.sinks
    assert sinks.stdout == StdoutConfig(format=EventFormat.CLOUDEVENTS, recovery=True)
    assert sinks.file is not None
    assert sinks.file.shaping == Shaping(min_duration=120.0, flaps=FlapMode.DROP)
    assert sinks.webhooks[0].format is EventFormat.CLOUDEVENTS
    assert sinks.webhooks[0].shaping == Shaping()
    off = parse_config(config_data(sinks={"stdout": False}), environ={})
    assert off.sinks.stdout is None
    assert masked(off)["sinks"]["stdout"] is False


def test_sinks_are_read() -> None:
    """File, webhooks (with defaults) and Alertmanager settings arrive in SinksConfig."""
    config = parse_config(
        config_data(
            sinks={
                "stdout": False,
                "file": {"path": "./events.jsonl"},
                "webhooks": [{"url": "https://h.example.com/x", "headers": {"Authorization": "Bearer t"}}],
                "alertmanager": {"url": "http://am:9093", "resend_interval": "2m"},
                "events_buffer": 10,
            }
        ),
        environ={},
    )
    sinks = config.sinks
    assert sinks.file is not None
    assert (sinks.stdout, sinks.file.path, sinks.events_buffer) == (None, "./events.jsonl", 10)
    hook = sinks.webhooks[0]
    assert (hook.url, hook.timeout, hook.queue_size, hook.max_retries) == (
        "https://h.example.com/x",
        5.0,
        1000,
        5,
    )
    assert hook.headers == (("Authorization", "Bearer t"),)
    assert sinks.alertmanager is not None
    assert (sinks.alertmanager.url, sinks.alertmanager.resend_interval) == ("http://am:9093", 120.0)


def test_discover_entries_are_read() -> None:
    """model_rid, branch, labels and interval (default 5m); discover alone is enough."""
    config = parse_config(
        config_data(
            deployments=[],
            discover=[{"model_rid": MODEL, "branch": "master"}, {"model_rid": MODEL, "interval": "1m"}],
        ),
        environ={},
    )
    assert config.deployments == ()
    assert [(d.model_rid, d.branch, d.interval) for d in config.discover] == [
        (MODEL, "master", 300.0),
        (MODEL, None, 60.0),
    ]


def test_dependent_defaults_follow_the_interval() -> None:
    """A short interval shortens the fast interval; staleness defaults to three intervals."""
    polling = parse_config(config_data(polling={"interval": "2s"}), environ={}).polling
    assert (polling.fast_interval, polling.staleness) == (2.0, 6.0)
    timeouts = parse_config(
        config_data(
            foundry={"base_url": "https://f.example.com", "auth": {"token": "t"}, "timeouts": {"total": "3s"}}
        ),
        environ={},
    ).foundry.timeouts
    assert (timeouts.connect, timeouts.read, timeouts.total) == (3.0, 3.0, 3.0)


# --- loading files ----------------------------------------------------------------------------------------


def test_unreadable_or_malformed_files_are_config_errors(tmp_path: Path) -> None:
    """Missing files, directories, non-UTF-8 bytes, YAML errors and non-mappings all raise ConfigError."""
    cases = {
        "missing.yaml": None,
        "list.yaml": b"- 1\n- 2\n",
        "empty.yaml": b"",
        "binary.yaml": b"\xff\xfe\x00garbage",
        "syntax.yaml": b"foundry: [unclosed\n",
        "tab.yaml": b"foundry:\n\tbase_url: x\n",
        "tags.yaml": b"foundry: !!python/object:os.system {}\n",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert len(info.value.problems) == 1
        assert info.value.problems[0].startswith(str(path)), name
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path, environ={})


def test_duplicate_keys_are_refused_but_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    """A key written twice is a problem (PyYAML would keep the last); overriding a << merge is not."""
    path = tmp_path / "dup.yaml"
    path.write_text(
        f"foundry: {{base_url: f.example.com, auth: {{token: t}}}}\ndeployments: [{RID}]\npolling: {{}}\npolling: {{}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.problems == (
        f"{path}: not valid YAML: found duplicate key 'polling' at line 4, column 1",
    )
    path.write_text(
        f"foundry: {{base_url: f.example.com, auth: {{token: t}}}}\ndeployments: [{RID}]\n"
        "sinks:\n  webhooks:\n    - &hook {url: 'https://h.example.com', timeout: 5s}\n"
        "    - {<<: *hook, timeout: 9s}\n"
    )
    hooks = load_config(path, environ={}).sinks.webhooks
    assert [h.timeout for h in hooks] == [5.0, 9.0]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_file_content_loads_or_raises_config_error(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    """Whatever the file holds, load_config returns a Config or raises ConfigError, nothing else."""
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_bytes(content)
    outcome = outcome_of(load_config, path)
    assert isinstance(outcome, Config) or outcome.problems


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
_trees = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "foundry",
                    "deployments",
                    "discover",
                    "polling",
                    "rid",
                    "labels",
                    "auth",
                    "token",
                    "x",
                    "base_url",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(_trees)
def test_any_data_parses_or_raises_config_error(data: Any) -> None:
    """parse_config never lets another exception escape, whatever shape the data has."""
    outcome = outcome_of(parse_config, data)
    assert isinstance(outcome, Config) or all(isinstance(p, str) for p in outcome.problems)


def test_deeply_nested_or_self_referencing_yaml_is_refused(tmp_path: Path) -> None:
    """Nesting beyond the limit, and a YAML alias that refers to itself, are problems, not crashes."""
    path = tmp_path / "deep.yaml"
    path.write_text("foundry: " + "[" * 60 + "]" * 60 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path, environ={})
    path.write_text("foundry: &a [*a]\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path, environ={})


# --- the models themselves -----------------------------------------------------------------------------


def models_under(model: type[Any]) -> list[type[Any]]:
    """``model`` and every section reachable from its fields (models and slotted dataclasses), each once."""
    found = [model]
    for candidate in found:
        for info in fields_of(candidate).values():
            stack = [info.annotation]
            while stack:
                annotation = stack.pop()
                if isinstance(annotation, type) and hasattr(annotation, "__pydantic_fields__"):
                    if annotation not in found:
                        found.append(annotation)
                else:
                    stack.extend(getattr(annotation, "__args__", ()))
    return found


def test_every_setting_is_described() -> None:
    """Each field of each section carries a description, which the JSON Schema shows to editors."""
    models = models_under(Config)
    assert len(models) >= 15
    assert {DeploymentConfig, DiscoverConfig} <= set(models)
    for model in models:
        for name, info in fields_of(model).items():
            assert info.description, f"{model.__name__}.{name}"


def test_secret_typed_fields_are_the_expected_ones() -> None:
    """The Secret marker sits on every credential-bearing field, and on nothing else."""
    marked = {(m.__name__, name) for m in models_under(Config) for name in secret_fields(m)}
    assert marked == {
        ("AuthConfig", "token"),
        ("AuthConfig", "client_secret"),
        ("ServerConfig", "basic_auth"),
        ("WebhookConfig", "url"),
        ("WebhookConfig", "headers"),
        ("AlertmanagerConfig", "url"),
        ("StateConfig", "password"),
    }


def secret_values(model: Any) -> list[str]:
    """The raw strings of every Secret-typed field in ``model`` and its sections (pair values included)."""
    values: list[str] = []
    hidden = secret_fields(type(model))
    for name in fields_of(type(model)):
        value = getattr(model, name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if hasattr(item, "__pydantic_fields__"):
                values += secret_values(item)
            elif name in hidden and item is not None:
                values.append(item if isinstance(item, str) else item[1])
    return values


def test_masked_hides_every_secret_typed_field() -> None:
    """Walking the model: no value of a Secret-typed field appears in masked() or in repr()."""
    by_token = parse_config(config_data(), environ={})
    with_credentials = secret_config().model_copy(
        update={
            "sinks": parse_config(
                config_data(sinks={"alertmanager": {"url": f"http://u:{SECRET}@am.example.com:9093/am?k=x"}}),
                environ={},
            ).sinks
        }
    )
    assert masked(with_credentials)["sinks"]["alertmanager"]["url"] == "http://am.example.com:9093/am/***"
    for config in (with_credentials, by_token):
        values = secret_values(config)
        assert values
        out = json.dumps(masked(config))
        for value in values:
            assert value not in out
            assert value not in repr(config)
    assert len(secret_values(with_credentials)) == 3
    assert len(secret_values(secret_config())) == 5


def test_the_json_schema_validates_the_example_files_and_refuses_mistakes() -> None:
    """config/monitor.yaml and config/demo.yaml pass the printed schema; typos, bad durations and ranges fail."""
    schema = config_schema()
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    for name in ("monitor.yaml", "demo.yaml"):
        document = yaml.safe_load((ROOT / "config" / name).read_text())
        assert list(validator.iter_errors(document)) == [], name
    bad = config_data(polling={"intervall": "30s", "interval": "fast", "jitter": 0.9})
    assert len(list(validator.iter_errors(bad))) == 3
    assert list(validator.iter_errors(config_data(polling={"interval": "1m30s"}))) == []


def test_the_json_schema_describes_defaults_bounds_and_secrets() -> None:
    """The schema is titled as the product's; descriptions, defaults and bounds come from the fields;
    durations take a string or a number; secrets are writeOnly."""
    schema = config_schema()
    assert (schema["title"], schema["$schema"]) == (
        "foundry-monitor configuration",
        "https://json-schema.org/draft/2020-12/schema",
    )
    defs = schema["$defs"]
    concurrency = defs["PollingConfig"]["properties"]["concurrency"]
    assert (concurrency["default"], concurrency["minimum"], concurrency["maximum"]) == (32, 1, 10000)
    assert concurrency["description"]
    interval = defs["PollingConfig"]["properties"]["interval"]
    assert {option["type"] for option in interval["anyOf"]} == {"string", "number"}
    assert defs["WebhookConfig"]["properties"]["url"]["writeOnly"] is True
    assert defs["WebhookConfig"]["additionalProperties"] is False


# --- the state backend ------------------------------------------------------------------------------------

DSN = "postgresql://monitor@db.example.com:5432/monitor"
DB_PASSWORD = "db-SENTINEL-41c2"


def test_the_state_backend_is_sqlite_unless_postgres_is_chosen_with_a_dsn() -> None:
    """state.backend defaults to sqlite; postgres (any case) takes a DSN, and without one is a problem at
    state.dsn."""
    assert parse_config(config_data(), environ={}).state.backend == "sqlite"
    chosen = parse_config(config_data(state={"backend": "Postgres", "dsn": DSN}), environ={})
    assert (chosen.state.backend, chosen.state.dsn) == ("postgres", DSN)
    assert has_problem(
        problems_of(config_data(state={"backend": "postgres"})), "state.dsn", "required with backend postgres"
    )
    assert has_problem(problems_of(config_data(state={"dsn": "mysql://db/x"})), "state.dsn", "postgresql://")


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://monitor:{DB_PASSWORD}@db/monitor",
        f"postgresql://monitor@db/monitor?password={DB_PASSWORD}",
    ],
    ids=["user-info", "query"],
)
def test_a_dsn_with_a_password_is_refused_without_repeating_it(dsn: str) -> None:
    """A password inside the DSN, before the host or as its ``password`` parameter, is a problem (it belongs
    in password_file, PGPASSWORD or state.password: the DSN is logged), and the problem's text does not show
    it."""
    problems = problems_of(config_data(state={"backend": "postgres", "dsn": dsn}))
    assert has_problem(problems, "state.dsn", "must not hold a password")
    assert DB_PASSWORD not in "\n".join(problems)


def test_the_database_password_from_the_environment_is_masked_and_not_in_repr() -> None:
    """state.password taken from ${VAR} is kept for the connection, masked in masked(), absent from repr."""
    config = parse_config(
        config_data(state={"backend": "postgres", "dsn": DSN, "password": "${DB_PASSWORD}"}),
        environ={"DB_PASSWORD": DB_PASSWORD},
    )
    assert config.state.password == DB_PASSWORD
    assert masked(config)["state"]["password"] == MASK
    assert DB_PASSWORD not in repr(config)
    assert DB_PASSWORD not in json.dumps(masked(config))
    both = config_data(state={"backend": "postgres", "dsn": DSN, "password": "x", "password_file": EXISTING})
    assert has_problem(problems_of(both), "state.password", "not with password_file")


def test_a_deployment_named_by_default_holds_one_copy_of_its_rid() -> None:
    """Without a name, a deployment's name is its RID's very string (names are interned like RIDs): a fleet
    of 10,000 holds one copy of each RID, not two."""
    config = parse_config(config_data(deployments=[RID, {"rid": RID2, "name": "scorer"}]), environ={})
    first, second = config.deployments
    assert first.name is first.rid
    assert second.name == "scorer"
