"""The configuration: one YAML file, validated once into one frozen object, problems named by key path."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml

from monitor.model import RID_PATTERN

T = TypeVar("T")

RESERVED_LABELS = frozenset(
    {
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
        "job",
        "instance",
    }
)
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_BCRYPT = re.compile(r"^\$2[aby]\$\d{2}\$[./A-Za-z0-9]{53}$")
MASK = "***"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` names each one by its key path."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def parse_duration(text: str | int | float) -> float:
    """``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, combinations like ``1m30s``, or a number of seconds."""
    if isinstance(text, bool):
        raise TypeError("a duration, not a boolean")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    value = text.strip()
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if number < 0 or number != number:
            raise ValueError("a duration cannot be negative")
        return number
    if not value or _DURATION_PART.sub("", value) != "":
        raise ValueError(f"expected a duration like 30s or 5m, got {text!r}")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


# --- the frozen configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthConfig:
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scope: str = "api:models-read"
    token_url: str = ""

    @property
    def method(self) -> str:
        if self.client_id is not None:
            return "client_credentials"
        if self.token_file is not None:
            return "token_file"
        return "token"


@dataclass(frozen=True, slots=True)
class TimeoutsConfig:
    connect: float = 5.0
    read: float = 10.0
    total: float = 30.0


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_bundle: str | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class RetryConfig:
    attempts: int = 3
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    retry_after_max: float = 60.0


@dataclass(frozen=True, slots=True)
class FoundryConfig:
    base_url: str
    auth: AuthConfig
    timeouts: TimeoutsConfig = TimeoutsConfig()
    tls: TlsConfig = TlsConfig()
    retries: RetryConfig = RetryConfig()
    max_body_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    rid: str
    name: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DiscoverConfig:
    model_rid: str
    branch: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    interval: float = 300.0


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_ratio: float = 1.0
    min_polls: int = 10
    window: float = 60.0
    cooldown: float = 30.0


@dataclass(frozen=True, slots=True)
class PollingConfig:
    interval: float = 30.0
    fast_interval: float = 5.0
    jitter: float = 0.1
    concurrency: int = 32
    requests_per_second: float = 50.0
    unreachable_after: int = 3
    staleness: float = 90.0
    error_backoff_max: float = 300.0
    breaker: BreakerConfig = BreakerConfig()


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"  # noqa: S104 - an exporter listens on every interface by default
    port: int = 9708
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    basic_auth: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    timeout: float = 5.0
    queue_size: int = 1000
    max_retries: int = 5
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    url: str
    resend_interval: float = 60.0
    timeout: float = 5.0
    max_retries: int = 5


@dataclass(frozen=True, slots=True)
class SinksConfig:
    stdout: bool = True
    file_path: str | None = None
    webhooks: tuple[WebhookConfig, ...] = ()
    alertmanager: AlertmanagerConfig | None = None
    events_buffer: int = 1000


@dataclass(frozen=True, slots=True)
class StateConfig:
    path: str = "./state/monitor.sqlite3"


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True, slots=True)
class Config:
    foundry: FoundryConfig
    deployments: tuple[DeploymentConfig, ...]
    discover: tuple[DiscoverConfig, ...]
    polling: PollingConfig
    server: ServerConfig
    sinks: SinksConfig
    state: StateConfig
    logging: LoggingConfig
    label_names: tuple[str, ...]
    source: str = "<config>"


# --- validation ----------------------------------------------------------------------------------------


class _Missing:
    pass


MISSING: Any = _Missing()


class _Reader:
    """Walks the raw YAML data, collecting problems instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def interpolate(self, value: str, path: str, *, secret: bool = False) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in self.environ:
                return self.environ[name]
            if default is not None:
                return default
            self.problem(path, f"environment variable {name} is not set")
            return ""

        return _INTERPOLATION.sub(replace, value)

    def mapping(self, data: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.problem(path or "(top level)", "expected a mapping")
            return {}
        for key in data:
            if not isinstance(key, str) or key not in allowed:
                self.problem(_join(path, str(key)), "unknown key")
        return {k: v for k, v in data.items() if isinstance(k, str) and k in allowed}

    def value(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        convert: Callable[[Any], T],
        default: T,
        what: str,
        *,
        secret: bool = False,
    ) -> T:
        raw = data.get(key, MISSING)
        here = _join(path, key)
        if raw is MISSING or raw is None:
            return default
        if isinstance(raw, str):
            raw = self.interpolate(raw, here, secret=secret)
        try:
            return convert(raw)
        except (ValueError, TypeError):
            shown = "" if secret else f", got {raw!r}"
            self.problem(here, f"expected {what}{shown}")
            return default

    def labels(self, data: Any, path: str) -> tuple[tuple[str, str], ...]:
        if data is None:
            return ()
        if not isinstance(data, dict):
            self.problem(path, "expected a mapping of label names to values")
            return ()
        pairs = []
        for name, value in data.items():
            here = _join(path, str(name))
            if not isinstance(name, str) or not _LABEL_NAME.match(name) or name.startswith("__"):
                self.problem(here, "not a valid Prometheus label name")
                continue
            if name in RESERVED_LABELS:
                self.problem(here, "reserved: the monitor sets this label itself")
                continue
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                self.problem(here, "label values must be strings")
                continue
            pairs.append((name, self.interpolate(str(value), here)))
        return tuple(sorted(pairs))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    number = int(value)
    if number != value and not isinstance(value, str):
        raise ValueError
    if number < 1:
        raise ValueError
    return number


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError
    return number


def _fraction(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise TypeError


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError
    return seconds


def normalize_base_url(raw: str) -> str:
    """``https://host`` for a bare host name; scheme, host and port only; no trailing slash."""
    text = raw.strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError
    return f"{parts.scheme}://{parts.netloc}"


def _url(value: Any) -> str:
    text = _string(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError
    return text


def _listen(value: Any) -> tuple[str, int]:
    text = _string(value).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104
    return host, port


def _read_foundry(r: _Reader, raw: Any) -> FoundryConfig:
    data = r.mapping(raw, "foundry", {"base_url", "auth", "timeouts", "tls", "retries", "max_body_bytes"})
    base = r.value(data, "base_url", "foundry", _string, "", "a URL")
    if not base and r.environ.get("FOUNDRY_HOSTNAME"):
        base = r.environ["FOUNDRY_HOSTNAME"]
    base_url = ""
    if not base:
        r.problem("foundry.base_url", "required (or set FOUNDRY_HOSTNAME)")
    else:
        try:
            base_url = normalize_base_url(base)
        except ValueError:
            r.problem("foundry.base_url", f"expected https://host[:port] or a host name, got {base!r}")

    auth_raw = r.mapping(
        data.get("auth"),
        "foundry.auth",
        {"token", "token_file", "client_id", "client_secret", "scope", "token_url"},
    )
    token = r.value(auth_raw, "token", "foundry.auth", _string, None, "a string", secret=True)
    token_file = r.value(auth_raw, "token_file", "foundry.auth", _string, None, "a path")
    client_id = r.value(auth_raw, "client_id", "foundry.auth", _string, None, "a string")
    client_secret = r.value(auth_raw, "client_secret", "foundry.auth", _string, None, "a string", secret=True)
    scope = r.value(auth_raw, "scope", "foundry.auth", _string, "api:models-read", "a string")
    token_url = r.value(auth_raw, "token_url", "foundry.auth", _url, "", "an http(s) URL")
    if not any((token, token_file, client_id, client_secret)):
        token = r.environ.get("FOUNDRY_TOKEN") or None
        if token is None and r.environ.get("FOUNDRY_CLIENT_ID"):
            client_id = r.environ["FOUNDRY_CLIENT_ID"]
            client_secret = r.environ.get("FOUNDRY_CLIENT_SECRET")
    methods = [
        name for name, v in (("token", token), ("token_file", token_file), ("client_id", client_id)) if v
    ]
    if not methods and client_secret is None:
        r.problem(
            "foundry.auth", "required: token, token_file, or client_id and client_secret (or FOUNDRY_TOKEN)"
        )
    elif len(methods) > 1:
        r.problem("foundry.auth", f"choose one method, not {' and '.join(methods)}")
    elif (client_id is None) != (client_secret is None):
        missing = "client_secret" if client_secret is None else "client_id"
        r.problem(f"foundry.auth.{missing}", "required with OAuth2 client credentials")
    if token is not None and not token.strip():
        r.problem("foundry.auth.token", "is empty")
    auth = AuthConfig(
        token=token,
        token_file=token_file,
        client_id=client_id,
        client_secret=client_secret,
        scope=scope,
        token_url=token_url or (base_url + "/multipass/api/oauth2/token" if base_url else ""),
    )

    t = r.mapping(data.get("timeouts"), "foundry.timeouts", {"connect", "read", "total"})
    timeouts = TimeoutsConfig(
        connect=r.value(t, "connect", "foundry.timeouts", _positive_duration, 5.0, "a positive duration"),
        read=r.value(t, "read", "foundry.timeouts", _positive_duration, 10.0, "a positive duration"),
        total=r.value(t, "total", "foundry.timeouts", _positive_duration, 30.0, "a positive duration"),
    )
    tls_raw = r.mapping(data.get("tls"), "foundry.tls", {"ca_bundle", "insecure_skip_verify"})
    ca_bundle = r.value(tls_raw, "ca_bundle", "foundry.tls", _string, None, "a path")
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        r.problem("foundry.tls.ca_bundle", f"file {ca_bundle} does not exist")
    tls = TlsConfig(
        ca_bundle=ca_bundle,
        insecure_skip_verify=r.value(
            tls_raw, "insecure_skip_verify", "foundry.tls", _boolean, False, "true or false"
        ),
    )
    rr = r.mapping(
        data.get("retries"),
        "foundry.retries",
        {"attempts", "backoff_initial", "backoff_max", "retry_after_max"},
    )
    p = "foundry.retries"
    retries = RetryConfig(
        attempts=r.value(rr, "attempts", p, _positive_int, 3, "a whole number >= 1"),
        backoff_initial=r.value(rr, "backoff_initial", p, _positive_duration, 0.2, "a positive duration"),
        backoff_max=r.value(rr, "backoff_max", p, _positive_duration, 10.0, "a positive duration"),
        retry_after_max=r.value(rr, "retry_after_max", p, _positive_duration, 60.0, "a positive duration"),
    )
    return FoundryConfig(
        base_url=base_url,
        auth=auth,
        timeouts=timeouts,
        tls=tls,
        retries=retries,
        max_body_bytes=r.value(
            data, "max_body_bytes", "foundry", _positive_int, 1 << 20, "a whole number >= 1"
        ),
    )


def _read_rid(r: _Reader, value: Any, path: str) -> str:
    rid = r.value({"rid": value}, "rid", path.rpartition(".")[0], _string, "", "a string")
    if value is None:
        r.problem(path, "required")
    elif rid and not RID_PATTERN.match(rid):
        r.problem(path, "does not match the RID pattern ri.<service>.<instance>.<type>.<locator>")
    return rid


def _read_deployments(r: _Reader, raw: Any) -> tuple[DeploymentConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problem("deployments", "expected a list")
        return ()
    seen: set[str] = set()
    result = []
    for index, item in enumerate(raw):
        path = f"deployments[{index}]"
        if isinstance(item, str):
            item = {"rid": item}
        data = r.mapping(item, path, {"rid", "name", "labels"})
        rid = _read_rid(r, data.get("rid"), f"{path}.rid")
        if rid in seen:
            r.problem(f"{path}.rid", "duplicate: this RID is listed twice")
        seen.add(rid)
        name = r.value(data, "name", path, _string, rid, "a string")
        result.append(
            DeploymentConfig(rid=rid, name=name or rid, labels=r.labels(data.get("labels"), f"{path}.labels"))
        )
    return tuple(result)


def _read_discover(r: _Reader, raw: Any) -> tuple[DiscoverConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problem("discover", "expected a list")
        return ()
    result = []
    for index, item in enumerate(raw):
        path = f"discover[{index}]"
        data = r.mapping(item, path, {"model_rid", "branch", "labels", "interval"})
        result.append(
            DiscoverConfig(
                model_rid=_read_rid(r, data.get("model_rid"), f"{path}.model_rid"),
                branch=r.value(data, "branch", path, _string, None, "a string"),
                labels=r.labels(data.get("labels"), f"{path}.labels"),
                interval=r.value(data, "interval", path, _positive_duration, 300.0, "a positive duration"),
            )
        )
    return tuple(result)


def _read_polling(r: _Reader, raw: Any) -> PollingConfig:
    p = "polling"
    data = r.mapping(
        raw,
        p,
        {
            "interval",
            "fast_interval",
            "jitter",
            "concurrency",
            "requests_per_second",
            "unreachable_after",
            "staleness",
            "error_backoff_max",
            "breaker",
        },
    )
    interval = r.value(data, "interval", p, _positive_duration, 30.0, "a positive duration")
    fast = r.value(data, "fast_interval", p, _positive_duration, min(5.0, interval), "a positive duration")
    if fast > interval:
        r.problem("polling.fast_interval", "must not be longer than polling.interval")
    jitter = r.value(data, "jitter", p, _fraction, 0.1, "a fraction from 0 to 0.5")
    if jitter > 0.5:
        r.problem("polling.jitter", "must be at most 0.5")
    concurrency = r.value(data, "concurrency", p, _positive_int, 32, "a whole number from 1 to 10000")
    if concurrency > 10_000:
        r.problem("polling.concurrency", "must be at most 10000")
    b = r.mapping(
        data.get("breaker"), "polling.breaker", {"failure_ratio", "min_polls", "window", "cooldown"}
    )
    bp = "polling.breaker"
    breaker = BreakerConfig(
        failure_ratio=r.value(b, "failure_ratio", bp, _fraction, 1.0, "a fraction from 0 to 1"),
        min_polls=r.value(b, "min_polls", bp, _positive_int, 10, "a whole number >= 1"),
        window=r.value(b, "window", bp, _positive_duration, 60.0, "a positive duration"),
        cooldown=r.value(b, "cooldown", bp, _positive_duration, 30.0, "a positive duration"),
    )
    staleness = r.value(data, "staleness", p, _positive_duration, 3 * interval, "a positive duration")
    if staleness < interval:
        r.problem("polling.staleness", "must be at least polling.interval")
    return PollingConfig(
        interval=interval,
        fast_interval=fast,
        jitter=jitter,
        concurrency=concurrency,
        requests_per_second=r.value(
            data, "requests_per_second", p, _positive_float, 50.0, "a positive number"
        ),
        unreachable_after=r.value(data, "unreachable_after", p, _positive_int, 3, "a whole number >= 1"),
        staleness=staleness,
        error_backoff_max=r.value(
            data, "error_backoff_max", p, _positive_duration, 300.0, "a positive duration"
        ),
        breaker=breaker,
    )


def _read_server(r: _Reader, raw: Any) -> ServerConfig:
    data = r.mapping(raw, "server", {"listen", "tls", "basic_auth"})
    host, port = r.value(data, "listen", "server", _listen, ("0.0.0.0", 9708), "host:port")  # noqa: S104
    tls = r.mapping(data.get("tls"), "server.tls", {"cert_file", "key_file"})
    cert = r.value(tls, "cert_file", "server.tls", _string, None, "a path")
    key = r.value(tls, "key_file", "server.tls", _string, None, "a path")
    if (cert is None) != (key is None):
        r.problem("server.tls", "cert_file and key_file go together")
    for name, path in (("cert_file", cert), ("key_file", key)):
        if path is not None and not Path(path).is_file():
            r.problem(f"server.tls.{name}", f"file {path} does not exist")
    users: list[tuple[str, str]] = []
    auth = data.get("basic_auth")
    if auth is not None and not isinstance(auth, dict):
        r.problem("server.basic_auth", "expected a mapping of user names to bcrypt hashes")
    for user, hashed in (auth or {}).items() if isinstance(auth, dict) else ():
        here = f"server.basic_auth.{user}"
        if not isinstance(hashed, str) or not _BCRYPT.match(r.interpolate(hashed, here)):
            r.problem(here, "expected a bcrypt hash ($2a$, $2b$ or $2y$)")
            continue
        users.append((str(user), r.interpolate(hashed, here)))
    return ServerConfig(host=host, port=port, tls_cert_file=cert, tls_key_file=key, basic_auth=tuple(users))


def _read_sinks(r: _Reader, raw: Any) -> SinksConfig:
    data = r.mapping(raw, "sinks", {"stdout", "file", "webhooks", "alertmanager", "events_buffer"})
    file_raw = r.mapping(data.get("file"), "sinks.file", {"path"})
    file_path = r.value(file_raw, "path", "sinks.file", _string, None, "a path")
    if data.get("file") is not None and file_path is None:
        r.problem("sinks.file.path", "required")
    hooks = []
    hooks_raw = data.get("webhooks") or []
    if not isinstance(hooks_raw, list):
        r.problem("sinks.webhooks", "expected a list")
        hooks_raw = []
    for index, item in enumerate(hooks_raw):
        path = f"sinks.webhooks[{index}]"
        h = r.mapping(item, path, {"url", "timeout", "queue_size", "max_retries", "headers"})
        url = r.value(h, "url", path, _url, "", "an http(s) URL")
        if not url and not any(p.startswith(f"{path}.url") for p in r.problems):
            r.problem(f"{path}.url", "required")
        headers_raw = h.get("headers") or {}
        headers: list[tuple[str, str]] = []
        if not isinstance(headers_raw, dict):
            r.problem(f"{path}.headers", "expected a mapping")
        else:
            for name, value in headers_raw.items():
                if not isinstance(value, str):
                    r.problem(f"{path}.headers.{name}", "expected a string")
                    continue
                headers.append((str(name), r.interpolate(value, f"{path}.headers.{name}", secret=True)))
        hooks.append(
            WebhookConfig(
                url=url,
                timeout=r.value(h, "timeout", path, _positive_duration, 5.0, "a positive duration"),
                queue_size=r.value(h, "queue_size", path, _positive_int, 1000, "a whole number >= 1"),
                max_retries=r.value(h, "max_retries", path, _non_negative_int, 5, "a whole number >= 0"),
                headers=tuple(headers),
            )
        )
    alertmanager = None
    if data.get("alertmanager") is not None:
        path = "sinks.alertmanager"
        a = r.mapping(data.get("alertmanager"), path, {"url", "resend_interval", "timeout", "max_retries"})
        url = r.value(a, "url", path, _url, "", "an http(s) URL")
        if not url:
            r.problem(f"{path}.url", "required")
        alertmanager = AlertmanagerConfig(
            url=url,
            resend_interval=r.value(
                a, "resend_interval", path, _positive_duration, 60.0, "a positive duration"
            ),
            timeout=r.value(a, "timeout", path, _positive_duration, 5.0, "a positive duration"),
            max_retries=r.value(a, "max_retries", path, _non_negative_int, 5, "a whole number >= 0"),
        )
    return SinksConfig(
        stdout=r.value(data, "stdout", "sinks", _boolean, True, "true or false"),
        file_path=file_path,
        webhooks=tuple(hooks),
        alertmanager=alertmanager,
        events_buffer=r.value(data, "events_buffer", "sinks", _positive_int, 1000, "a whole number >= 1"),
    )


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    number = int(value)
    if number < 0:
        raise ValueError
    return number


def _choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = _string(value).lower()
        if text not in options:
            raise ValueError
        return text

    return convert


def parse_config(
    data: object, *, environ: Mapping[str, str] | None = None, source: str = "<config>"
) -> Config:
    """Validate already-parsed YAML data into a ``Config``; raises ``ConfigError`` naming every problem."""
    r = _Reader(os.environ if environ is None else environ)
    top = r.mapping(
        data,
        "",
        {"foundry", "deployments", "discover", "polling", "server", "sinks", "state", "logging"},
    )
    foundry = _read_foundry(r, top.get("foundry"))
    deployments = _read_deployments(r, top.get("deployments"))
    discover = _read_discover(r, top.get("discover"))
    if not deployments and not discover:
        r.problem("deployments", "name at least one deployment, or a model under discover")
    polling = _read_polling(r, top.get("polling"))
    server = _read_server(r, top.get("server"))
    sinks = _read_sinks(r, top.get("sinks"))
    state_raw = r.mapping(top.get("state"), "state", {"path"})
    state = StateConfig(
        path=r.value(state_raw, "path", "state", _string, "./state/monitor.sqlite3", "a path")
    )
    log_raw = r.mapping(top.get("logging"), "logging", {"level", "format"})
    logging_config = LoggingConfig(
        level=r.value(
            log_raw,
            "level",
            "logging",
            _choice("debug", "info", "warning", "error"),
            "info",
            "one of debug, info, warning, error",
        ),
        format=r.value(
            log_raw,
            "format",
            "logging",
            _choice("auto", "json", "console"),
            "auto",
            "one of auto, json, console",
        ),
    )
    if r.problems:
        raise ConfigError(tuple(r.problems))
    label_names = tuple(
        sorted(
            {name for d in deployments for name, _ in d.labels}
            | {name for d in discover for name, _ in d.labels}
        )
    )
    return Config(
        foundry=foundry,
        deployments=deployments,
        discover=discover,
        polling=polling,
        server=server,
        sinks=sinks,
        state=state,
        logging=logging_config,
        label_names=label_names,
        source=source,
    )


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML file; every failure, including an unreadable file, is a ``ConfigError``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            (f"{path}: cannot be read ({getattr(exc, 'strerror', None) or type(exc).__name__})",)
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError((f"{path}: not valid YAML{where}",)) from None
    return parse_config(data, environ=environ, source=str(path))


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, every secret replaced by ``***``."""
    auth = config.foundry.auth
    f = config.foundry
    return {
        "foundry": {
            "base_url": f.base_url,
            "auth": {
                "method": auth.method,
                "token": MASK if auth.token else None,
                "token_file": auth.token_file,
                "client_id": auth.client_id,
                "client_secret": MASK if auth.client_secret else None,
                "scope": auth.scope,
                "token_url": auth.token_url,
            },
            "timeouts": {"connect": f.timeouts.connect, "read": f.timeouts.read, "total": f.timeouts.total},
            "tls": {"ca_bundle": f.tls.ca_bundle, "insecure_skip_verify": f.tls.insecure_skip_verify},
            "retries": {
                "attempts": f.retries.attempts,
                "backoff_initial": f.retries.backoff_initial,
                "backoff_max": f.retries.backoff_max,
                "retry_after_max": f.retries.retry_after_max,
            },
            "max_body_bytes": f.max_body_bytes,
        },
        "deployments": [{"rid": d.rid, "name": d.name, "labels": dict(d.labels)} for d in config.deployments],
        "discover": [
            {"model_rid": d.model_rid, "branch": d.branch, "labels": dict(d.labels), "interval": d.interval}
            for d in config.discover
        ],
        "polling": {
            "interval": config.polling.interval,
            "fast_interval": config.polling.fast_interval,
            "jitter": config.polling.jitter,
            "concurrency": config.polling.concurrency,
            "requests_per_second": config.polling.requests_per_second,
            "unreachable_after": config.polling.unreachable_after,
            "staleness": config.polling.staleness,
            "error_backoff_max": config.polling.error_backoff_max,
            "breaker": {
                "failure_ratio": config.polling.breaker.failure_ratio,
                "min_polls": config.polling.breaker.min_polls,
                "window": config.polling.breaker.window,
                "cooldown": config.polling.breaker.cooldown,
            },
        },
        "server": {
            "listen": f"{config.server.host}:{config.server.port}",
            "tls": {"cert_file": config.server.tls_cert_file, "key_file": config.server.tls_key_file},
            "basic_auth": {user: MASK for user, _ in config.server.basic_auth},
        },
        "sinks": {
            "stdout": config.sinks.stdout,
            "file": {"path": config.sinks.file_path},
            "webhooks": [
                {
                    "url": h.url,
                    "timeout": h.timeout,
                    "queue_size": h.queue_size,
                    "max_retries": h.max_retries,
                    "headers": {name: MASK for name, _ in h.headers},
                }
                for h in config.sinks.webhooks
            ],
            "alertmanager": None
            if config.sinks.alertmanager is None
            else {
                "url": config.sinks.alertmanager.url,
                "resend_interval": config.sinks.alertmanager.resend_interval,
                "timeout": config.sinks.alertmanager.timeout,
                "max_retries": config.sinks.alertmanager.max_retries,
            },
            "events_buffer": config.sinks.events_buffer,
        },
        "state": {"path": config.state.path},
        "logging": {"level": config.logging.level, "format": config.logging.format},
    }


def config_hash(config: Config) -> str:
    """A short, stable id of the live configuration; secrets enter only through a keyed digest."""
    secrets_text = json.dumps(
        [
            config.foundry.auth.token,
            config.foundry.auth.client_secret,
            [h.headers for h in config.sinks.webhooks],
            config.server.basic_auth,
        ]
    )
    secret_digest = hmac.new(b"foundry-monitor-config", secrets_text.encode(), hashlib.sha256).hexdigest()
    body = json.dumps([masked(config), secret_digest], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:12]
