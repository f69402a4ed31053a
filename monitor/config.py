"""The configuration: one YAML file, read and validated once into one frozen ``Config``.

Validation never stops at the first problem: every problem is collected, named by its key path
(``deployments[2].rid: ...``), and all of them are raised together in one ``ConfigError``. Unknown keys are
problems too. Messages never echo a secret (tokens, client secrets, webhook headers and URLs, password
hashes): a bad secret is reported by its key path and its kind only.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import ipaddress
import json
import math
import os
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from yaml.constructor import ConstructorError

from monitor.model import RID_PATTERN

#: What a secret is replaced with in ``masked`` output.
MASK: Final = "***"

#: Labels the monitor puts on its own series (or Prometheus on every target); static labels may not use them.
RESERVED_LABELS: Final = frozenset(
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
        # Set on the alerts the Alertmanager sink pushes.
        "alertname",
        "severity",
        "source",
    }
)

DEFAULT_SCOPE: Final = "api:models-read"
TOKEN_PATH: Final = "/multipass/api/oauth2/token"  # noqa: S105 - a URL path, not a password
DEFAULT_LISTEN: Final = ("0.0.0.0", 9708)  # noqa: S104 - an exporter listens on every interface by default
DEFAULT_STATE_PATH: Final = "./state/monitor.sqlite3"
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("auto", "json", "console")

#: The longest duration any setting takes: longer ones are typos, and would overflow some event loops' timers.
MAX_DURATION: Final = 30 * 86400.0
_MAX_FILE_BYTES = 16 << 20
#: Bounds the work of walking a hostile document (YAML aliases can make a small file a huge tree).
_MAX_NODES = 1_000_000
_MAX_DEPTH = 32
_MAX_TEXT = 4096
_MAX_NAME = 200
_MAX_LABEL_VALUE = 1024

_UNITS: Final = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_RANK: Final = {unit: rank for rank, unit in enumerate(_UNITS)}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_BARE_SECONDS = re.compile(_NUMBER)
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d)")
_SIGNED_NUMBER = re.compile(rf"[+-]?{_NUMBER}")
# Bounded: int() refuses very long digit strings, and no setting needs more.
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s")
_TRUE = frozenset({"true", "yes", "on"})
_FALSE = frozenset({"false", "no", "off"})


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` names every problem found, each by its key path."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__(problems)
        self.problems = tuple(problems)

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{count} configuration problem{'' if count == 1 else 's'}:"
        return "\n  ".join((head, *self.problems))


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, ``1m30s`` (largest unit first) or a bare number.

    Raises ``ValueError`` for anything else, including negative, infinite and NaN values.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        # One exception type for every bad input, as the signature promises.
        raise ValueError("expected a duration like 30s or 5m")  # noqa: TRY004
    if isinstance(text, str):
        seconds = _parse_duration_text(text.strip())
    else:
        try:
            seconds = float(text)
        except OverflowError:
            raise ValueError("duration out of range") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite, non-negative length of time")
    return seconds


def _parse_duration_text(text: str) -> float:
    if _BARE_SECONDS.fullmatch(text):
        return float(text)
    total = 0.0
    position = 0
    last_rank = -1
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise ValueError("expected a duration like 30s or 5m")
        number, unit = match.groups()
        rank = _UNIT_RANK[unit]
        if rank <= last_rank:
            raise ValueError("duration units must go from the largest to the smallest, each once")
        last_rank = rank
        # Dividing by 1000 is exact where multiplying by 0.001 is not: 500ms is exactly 0.5.
        total += float(number) / 1000 if unit == "ms" else float(number) * _UNITS[unit]
        position = match.end()
    if position == 0:
        raise ValueError("expected a duration like 30s or 5m")
    return total


def format_duration(seconds: float) -> str:
    """The shortest text ``parse_duration`` reads back as exactly ``seconds`` (``90.0`` -> ``1m30s``)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite, non-negative length of time")
    if seconds != int(seconds):
        return f"{seconds!r}s"
    rest = int(seconds)
    parts = []
    for unit in ("d", "h", "m"):
        count, rest = divmod(rest, int(_UNITS[unit]))
        if count:
            parts.append(f"{count}{unit}")
    if rest or not parts:
        parts.append(f"{rest}s")
    return "".join(parts)


# --- the frozen configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """How the client authenticates: exactly one of a token, a token file or OAuth2 client credentials."""

    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    scope: str = DEFAULT_SCOPE
    token_url: str = ""

    @property
    def method(self) -> Literal["token", "token_file", "client_credentials"]:
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
    """A deployment to watch. ``labels`` holds every name in ``Config.label_names``, missing ones ``""``."""

    rid: str
    name: str
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DiscoverConfig:
    """A model whose deployments are listed every ``interval``; labels filled as for ``DeploymentConfig``."""

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
    """Where ``/metrics`` and the API listen. ``basic_auth`` holds (user, bcrypt hash) pairs."""

    host: str = DEFAULT_LISTEN[0]
    port: int = DEFAULT_LISTEN[1]
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    basic_auth: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    # Webhook URLs often carry their credential in the path (Slack, Teams): kept out of repr as well.
    url: str = field(repr=False)
    timeout: float = 5.0
    queue_size: int = 1000
    max_retries: int = 5
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class AlertmanagerConfig:
    url: str = field(repr=False)
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
    path: str = DEFAULT_STATE_PATH
    #: How long delivered events stay in the outbox before they are pruned.
    retention: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration. ``label_names``: the static label set every deployment carries."""

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


# --- reading raw data -------------------------------------------------------------------------------------


class _Unresolved(enum.Enum):
    """Stands in for a string whose ``${VAR}`` could not be resolved; its problem is already reported."""

    VALUE = "unresolved"


_UNRESOLVED: Final = _Unresolved.VALUE


def _join(base: str, key: str) -> str:
    if not _PLAIN_KEY.fullmatch(key):
        return f"{base}[{key!r}]"
    return f"{base}.{key}" if base else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _shown(value: Any, *, secret: bool = False) -> str:
    """``value`` for a problem message: its repr when it is a plain scalar and not a secret, else its kind."""
    if secret or isinstance(value, bool) or not isinstance(value, str | int | float):
        return _kind(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + "...'"


def _suggest(key: str, allowed: Collection[str]) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(sorted(allowed))})"


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOST_NAME.fullmatch(host) is not None
    return True


def normalize_base_url(text: str) -> str:
    """``scheme://host[:port]`` from a URL or a bare host name: ``https://`` unless ``http://`` is written.

    Raises ``ValueError`` with a message that does not repeat the text (it could hold credentials).
    """
    raw = text.strip()
    if "://" not in raw:
        raw = "https://" + raw
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid host or port") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("expected https://host[:port] or a host name (http:// only when written out)")
    if "@" in parts.netloc:
        raise ValueError("must not contain credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be just scheme://host[:port], without a path (the monitor adds /api/v2/...)")
    if not parts.hostname or not _valid_host(parts.hostname) or port == 0:
        raise ValueError("has an invalid host or port")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _check_http_url(text: str) -> str | None:
    """Why ``text`` is not an absolute http(s) URL, or None when it is one."""
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return "expected an http:// or https:// URL with a valid host and port"
    if parts.scheme.lower() not in ("http", "https"):
        return "expected an http:// or https:// URL"
    if not parts.hostname or not _valid_host(parts.hostname) or port == 0:
        return "expected an http:// or https:// URL with a valid host and port"
    return None


def _parse_listen(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        port_text = rest[1:] if bracket and rest.startswith(":") else ""
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("expected host:port, with an IPv6 address in brackets like [::]:9708") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError("expected host:port, like 0.0.0.0:9708 or 127.0.0.1:9708")
        if ":" in host:
            raise ValueError("write an IPv6 address in brackets, like [::]:9708")
        if not _valid_host(host):
            raise ValueError("expected host:port, with a valid host name or address")
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise ValueError("the port must be a number from 0 to 65535")
    return host, int(port_text)


def _range_text(low: float, high: float | None) -> str:
    return f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"


class _Reader:
    """Walks the raw data, reporting each problem under its key path instead of stopping at the first.

    A value with a problem is replaced by its default so that reading can go on; ``ok`` tells whether
    values are trustworthy enough for cross-field checks, so that one mistake is reported once.
    """

    def __init__(self, environ: Mapping[str, str], source: str) -> None:
        self.environ = environ
        self.source = source
        self.problems: list[str] = []
        self._bad: set[str] = set()
        self._nodes = 0

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path or self.source}: {message}")
        self._bad.add(path)

    def ok(self, *paths: str) -> bool:
        return not any(path in self._bad for path in paths)

    # interpolation

    def resolve(self, value: Any, path: str, depth: int = 0) -> Any:
        """``value`` with ``${VAR}`` references in every string replaced; failed strings become unresolved."""
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise ConfigError((f"{self.source}: too large (more than {_MAX_NODES} values)",))
        if depth > _MAX_DEPTH:
            self.problem(path, "nested too deeply")
            return _UNRESOLVED
        if isinstance(value, str):
            return self._interpolate(value, path)
        if isinstance(value, dict):
            return {
                key: self.resolve(item, _join(path, key) if isinstance(key, str) else path, depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.resolve(item, f"{path}[{index}]", depth + 1) for index, item in enumerate(value)]
        return value

    def _interpolate(self, text: str, path: str) -> str | _Unresolved:
        if "${" not in text:
            return text
        out: list[str] = []
        position = 0
        failed = False
        for match in _REFERENCE.finditer(text):
            out.append(text[position : match.start()])
            position = match.end()
            if match.group(0) == "$${":
                out.append("${")
                continue
            inner = match.group(1)
            variable = None if inner is None else _VARIABLE.fullmatch(inner)
            if variable is None:
                failed = True
                self.problem(
                    path,
                    "malformed reference: expected ${NAME} or ${NAME:-default} (write $${ for a literal ${)",
                )
                continue
            name, default = variable.groups()
            value = self.environ.get(name)
            if value:
                out.append(value)
            elif default is not None:
                # As in the shell, ``:-`` also replaces a variable that is set but empty.
                out.append(default)
            elif value is not None:
                out.append(value)
            else:
                failed = True
                self.problem(path, f"environment variable {name} is not set (and no ${{{name}:-default}})")
        out.append(text[position:])
        return _UNRESOLVED if failed else "".join(out)

    # structure

    def mapping(self, value: Any, path: str, allowed: Collection[str]) -> dict[str, Any] | None:
        """The allowed keys of a mapping (``{}`` for null); None when ``value`` is not a mapping at all."""
        if value is None:
            return {}
        if value is _UNRESOLVED:
            return None
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_kind(value)}")
            return None
        known: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.problem(path, f"keys must be strings, got {_shown(key)}")
            elif key not in allowed:
                self.problem(_join(path, key), "unknown key" + _suggest(key, allowed))
            else:
                known[key] = item
        return known

    def section(self, value: Any, path: str, allowed: Collection[str]) -> dict[str, Any]:
        return self.mapping(value, path, allowed) or {}

    def sequence(self, value: Any, path: str) -> list[Any]:
        if value is None or value is _UNRESOLVED:
            return []
        if not isinstance(value, list):
            self.problem(path, f"expected a list, got {_kind(value)}")
            return []
        return value

    # scalars: each returns ``default`` when the key is absent or its value has a problem

    def _get(
        self, data: Mapping[str, Any], key: str, base: str, *, required: bool = False
    ) -> tuple[str, Any]:
        path = _join(base, key)
        value = data.get(key)
        if value is None and required:
            self.problem(path, "required")
        return path, None if value is _UNRESOLVED else value

    def check_text(
        self, value: Any, path: str, *, secret: bool = False, limit: int = _MAX_TEXT
    ) -> str | None:
        if not isinstance(value, str):
            hint = " (quote it)" if isinstance(value, int | float) else ""
            self.problem(path, f"expected a string, got {_shown(value, secret=secret)}{hint}")
            return None
        text = value.strip()
        if not text:
            self.problem(path, "must not be empty")
        elif _CONTROL.search(text):
            self.problem(path, "must not contain control characters or line breaks")
        elif len(text) > limit:
            self.problem(path, f"must be at most {limit} characters long")
        else:
            return text
        return None

    def opt_text(
        self,
        data: Mapping[str, Any],
        key: str,
        base: str,
        *,
        required: bool = False,
        secret: bool = False,
        limit: int = _MAX_TEXT,
    ) -> str | None:
        path, value = self._get(data, key, base, required=required)
        if value is None:
            return None
        return self.check_text(value, path, secret=secret, limit=limit)

    def text(
        self, data: Mapping[str, Any], key: str, base: str, default: str, *, limit: int = _MAX_TEXT
    ) -> str:
        value = self.opt_text(data, key, base, limit=limit)
        return default if value is None else value

    def existing_file(self, data: Mapping[str, Any], key: str, base: str) -> str | None:
        path = self.opt_text(data, key, base)
        if path is not None and not os.path.isfile(path):
            self.problem(_join(base, key), f"no such file: {path!r}")
        return path

    def url(self, data: Mapping[str, Any], key: str, base: str, *, required: bool = False) -> str | None:
        # The value is never shown: a URL may carry a credential in its user info, path or query.
        path, value = self._get(data, key, base, required=required)
        if value is None:
            return None
        text = self.check_text(value, path, secret=True)
        if text is None:
            return None
        why = _check_http_url(text)
        if why is not None:
            self.problem(path, why)
            return None
        return text

    def choice(
        self, data: Mapping[str, Any], key: str, base: str, default: str, options: Sequence[str]
    ) -> str:
        path, value = self._get(data, key, base)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        self.problem(path, f"expected one of {', '.join(options)}, got {_shown(value)}")
        return default

    def boolean(self, data: Mapping[str, Any], key: str, base: str, default: bool) -> bool:
        path, value = self._get(data, key, base)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        self.problem(path, f"expected true or false, got {_shown(value)}")
        return default

    def integer(
        self, data: Mapping[str, Any], key: str, base: str, default: int, *, low: int, high: int | None
    ) -> int:
        path, value = self._get(data, key, base)
        if value is None:
            return default
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            number = int(value.strip())
        if number is None:
            self.problem(path, f"expected a whole number, got {_shown(value)}")
            return default
        if number < low or (high is not None and number > high):
            self.problem(path, f"must be {_range_text(low, high)}, got {number}")
            return default
        return number

    def number(
        self,
        data: Mapping[str, Any],
        key: str,
        base: str,
        default: float,
        *,
        low: float,
        high: float,
        above_low: bool = False,
    ) -> float:
        path, value = self._get(data, key, base)
        if value is None:
            return default
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
        elif isinstance(value, str) and _SIGNED_NUMBER.fullmatch(value.strip()):
            number = float(value.strip())
        if number is None or not math.isfinite(number):
            self.problem(path, f"expected a number, got {_shown(value)}")
            return default
        if (number <= low if above_low else number < low) or number > high:
            bound = f"more than {low:g} and at most {high:g}" if above_low else _range_text(low, high)
            self.problem(path, f"must be {bound}, got {number:g}")
            return default
        return number

    def duration(
        self, data: Mapping[str, Any], key: str, base: str, default: float, *, allow_zero: bool = False
    ) -> float:
        path, value = self._get(data, key, base)
        if value is None:
            return default
        try:
            seconds = parse_duration(value)
        except ValueError:
            self.problem(path, f"expected a duration like 30s or 5m, got {_shown(value)}")
            return default
        if seconds == 0 and not allow_zero:
            self.problem(path, "must be longer than 0s")
        elif seconds > MAX_DURATION:
            self.problem(path, f"must be at most {format_duration(MAX_DURATION)}, got {_shown(value)}")
        else:
            return seconds
        return default

    def labels(self, value: Any, path: str) -> dict[str, str]:
        if value is None or value is _UNRESOLVED:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping of label names to values, got {_kind(value)}")
            return {}
        labels: dict[str, str] = {}
        for name, item in value.items():
            if not isinstance(name, str):
                self.problem(path, f"label names must be strings, got {_shown(name)}")
                continue
            here = _join(path, name)
            why = _label_name_problem(name)
            if why is not None:
                self.problem(here, why)
            elif item is _UNRESOLVED:
                continue
            elif isinstance(item, bool) or not isinstance(item, str | int):
                hint = " (quote it)" if isinstance(item, bool | float) else ""
                self.problem(here, f"expected a string, got {_shown(item)}{hint}")
            elif len(str(item)) > _MAX_LABEL_VALUE:
                self.problem(here, f"must be at most {_MAX_LABEL_VALUE} characters long")
            else:
                labels[name] = str(item)
        return labels


def _label_name_problem(name: str) -> str | None:
    if not _LABEL_NAME.fullmatch(name):
        return "not a valid Prometheus label name (must match [a-zA-Z_][a-zA-Z0-9_]*)"
    if name.startswith("__"):
        return "label names starting with __ are reserved by Prometheus"
    if name in RESERVED_LABELS:
        return "reserved: the monitor (or Prometheus) sets this label itself"
    return None


# --- sections ---------------------------------------------------------------------------------------------

_TOP_KEYS = ("foundry", "deployments", "discover", "polling", "server", "sinks", "state", "logging")
_FOUNDRY_KEYS = ("base_url", "auth", "timeouts", "tls", "retries", "max_body_bytes")
_AUTH_KEYS = ("token", "token_file", "client_id", "client_secret", "scope", "token_url")
_POLLING_KEYS = (
    "interval",
    "fast_interval",
    "jitter",
    "concurrency",
    "requests_per_second",
    "unreachable_after",
    "staleness",
    "error_backoff_max",
    "breaker",
)


def _read_base_url(r: _Reader, data: Mapping[str, Any]) -> str:
    path = "foundry.base_url"
    value = data.get("base_url")
    if value is _UNRESOLVED:
        return ""
    origin = "from FOUNDRY_HOSTNAME: "
    if value is None:
        value = r.environ.get("FOUNDRY_HOSTNAME", "").strip()
        if not value:
            if r.ok("foundry"):
                r.problem(path, "required (or set FOUNDRY_HOSTNAME in the environment)")
            return ""
    else:
        origin = ""
        value = r.check_text(value, path, secret=True)
        if value is None:
            return ""
    try:
        return normalize_base_url(value)
    except ValueError as exc:
        r.problem(path, f"{origin}{exc}")
        return ""


def _read_auth(r: _Reader, raw: Any, base_url: str) -> AuthConfig:
    base = "foundry.auth"
    data = r.section(raw, base, _AUTH_KEYS)
    given = {
        key for key in ("token", "token_file", "client_id", "client_secret") if data.get(key) is not None
    }
    methods = [keys for keys in ({"token"}, {"token_file"}, {"client_id", "client_secret"}) if given & keys]
    if len(methods) > 1:
        r.problem(
            base,
            "give exactly one of token, token_file, or client_id with client_secret; "
            f"got {', '.join(sorted(given))}",
        )
    token = r.opt_text(data, "token", base, secret=True)
    if token is not None and _WHITESPACE.search(token):
        r.problem(f"{base}.token", "must not contain whitespace")
    token_file = r.existing_file(data, "token_file", base)
    client_id = r.opt_text(data, "client_id", base)
    client_secret = r.opt_text(data, "client_secret", base, secret=True)
    for key, other in (("client_id", "client_secret"), ("client_secret", "client_id")):
        if len(methods) == 1 and key in given and other not in given:
            r.problem(f"{base}.{other}", f"required with {key}")
    if not methods and r.ok("foundry", base):
        token, client_id, client_secret = _auth_from_environment(r, base)
    scope = r.text(data, "scope", base, DEFAULT_SCOPE)
    token_url = r.url(data, "token_url", base) or (base_url + TOKEN_PATH if base_url else "")
    return AuthConfig(
        token=token,
        token_file=token_file,
        client_id=client_id,
        client_secret=client_secret,
        scope=scope,
        token_url=token_url,
    )


def _auth_from_environment(r: _Reader, base: str) -> tuple[str | None, str | None, str | None]:
    """(token, client_id, client_secret) from the SDK's environment variables, when the file names none."""
    token = r.environ.get("FOUNDRY_TOKEN", "").strip()
    client_id = r.environ.get("FOUNDRY_CLIENT_ID", "").strip()
    client_secret = r.environ.get("FOUNDRY_CLIENT_SECRET", "").strip()
    if token:
        if _WHITESPACE.search(token) or _CONTROL.search(token):
            r.problem(base, "FOUNDRY_TOKEN must not contain whitespace or control characters")
        return token, None, None
    if client_id and client_secret:
        if _CONTROL.search(client_id + client_secret):
            r.problem(base, "FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET must not contain control characters")
        return None, client_id, client_secret
    if client_id or client_secret:
        r.problem(base, "FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET must be set together")
    else:
        r.problem(
            base,
            "required: give token, token_file, or client_id and client_secret "
            "(or set FOUNDRY_TOKEN, or FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET, in the environment)",
        )
    return None, None, None


def _read_foundry(r: _Reader, raw: Any) -> FoundryConfig:
    data = r.section(raw, "foundry", _FOUNDRY_KEYS)
    base_url = _read_base_url(r, data)
    auth = _read_auth(r, data.get("auth"), base_url)

    base = "foundry.timeouts"
    t = r.section(data.get("timeouts"), base, ("connect", "read", "total"))
    total = r.duration(t, "total", base, 30.0)
    connect = r.duration(t, "connect", base, min(5.0, total))
    read = r.duration(t, "read", base, min(10.0, total))
    for key, value in (("connect", connect), ("read", read)):
        if value > total and r.ok(f"{base}.{key}", f"{base}.total"):
            r.problem(f"{base}.{key}", f"must not be longer than {base}.total ({format_duration(total)})")

    base = "foundry.tls"
    tls_data = r.section(data.get("tls"), base, ("ca_bundle", "insecure_skip_verify"))
    tls = TlsConfig(
        ca_bundle=r.existing_file(tls_data, "ca_bundle", base),
        insecure_skip_verify=r.boolean(tls_data, "insecure_skip_verify", base, False),
    )

    base = "foundry.retries"
    rt = r.section(
        data.get("retries"), base, ("attempts", "backoff_initial", "backoff_max", "retry_after_max")
    )
    backoff_initial = r.duration(rt, "backoff_initial", base, 0.2)
    backoff_max = r.duration(rt, "backoff_max", base, max(10.0, backoff_initial))
    if backoff_max < backoff_initial and r.ok(f"{base}.backoff_initial", f"{base}.backoff_max"):
        r.problem(f"{base}.backoff_max", f"must not be shorter than {base}.backoff_initial")
    retries = RetryConfig(
        attempts=r.integer(rt, "attempts", base, 3, low=1, high=20),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        retry_after_max=r.duration(rt, "retry_after_max", base, 60.0, allow_zero=True),
    )
    return FoundryConfig(
        base_url=base_url,
        auth=auth,
        timeouts=TimeoutsConfig(connect=connect, read=read, total=total),
        tls=tls,
        retries=retries,
        max_body_bytes=r.integer(data, "max_body_bytes", "foundry", 1 << 20, low=1024, high=1 << 30),
    )


def _read_rid(r: _Reader, data: Mapping[str, Any], key: str, base: str) -> str:
    rid = r.opt_text(data, key, base, required=True)
    if rid is None:
        return ""
    if not RID_PATTERN.match(rid):
        r.problem(
            _join(base, key),
            f"does not match the RID pattern ri.<service>.<instance>.<type>.<locator> (got {rid!r})",
        )
        return ""
    return rid


def _read_deployments(r: _Reader, raw: Any) -> list[tuple[str, str, dict[str, str]]]:
    """(rid, name, labels) of each deployment; a bare string item is shorthand for ``{rid: ...}``."""
    found: list[tuple[str, str, dict[str, str]]] = []
    first_seen: dict[str, int] = {}
    for index, item in enumerate(r.sequence(raw, "deployments")):
        base = f"deployments[{index}]"
        data = r.mapping({"rid": item} if isinstance(item, str) else item, base, ("rid", "name", "labels"))
        if data is None:
            continue
        rid = _read_rid(r, data, "rid", base)
        if rid in first_seen:
            r.problem(f"{base}.rid", f"duplicate: already listed as deployments[{first_seen[rid]}]")
        elif rid:
            first_seen[rid] = index
        name = r.text(data, "name", base, rid, limit=_MAX_NAME)
        found.append((rid, name, r.labels(data.get("labels"), f"{base}.labels")))
    return found


def _read_discover(r: _Reader, raw: Any) -> list[tuple[str, str | None, dict[str, str], float]]:
    found: list[tuple[str, str | None, dict[str, str], float]] = []
    first_seen: dict[tuple[str, str | None], int] = {}
    for index, item in enumerate(r.sequence(raw, "discover")):
        base = f"discover[{index}]"
        data = r.mapping(item, base, ("model_rid", "branch", "labels", "interval"))
        if data is None:
            continue
        model_rid = _read_rid(r, data, "model_rid", base)
        branch = r.opt_text(data, "branch", base, limit=_MAX_NAME)
        key = (model_rid, branch)
        if key in first_seen:
            r.problem(base, f"duplicate: discover[{first_seen[key]}] has the same model_rid and branch")
        elif model_rid:
            first_seen[key] = index
        labels = r.labels(data.get("labels"), f"{base}.labels")
        found.append((model_rid, branch, labels, r.duration(data, "interval", base, 300.0)))
    return found


def _read_polling(r: _Reader, raw: Any) -> PollingConfig:
    base = "polling"
    data = r.section(raw, base, _POLLING_KEYS)
    interval = r.duration(data, "interval", base, 30.0)
    fast = r.duration(data, "fast_interval", base, min(5.0, interval))
    staleness = r.duration(data, "staleness", base, 3 * interval)
    backoff_max = r.duration(data, "error_backoff_max", base, max(300.0, interval))
    for key, value, relation in (
        ("fast_interval", fast <= interval, "longer than"),
        ("staleness", staleness >= interval, "shorter than"),
        ("error_backoff_max", backoff_max >= interval, "shorter than"),
    ):
        if not value and r.ok(f"{base}.{key}", f"{base}.interval"):
            r.problem(
                f"{base}.{key}", f"must not be {relation} polling.interval ({format_duration(interval)})"
            )
    bbase = "polling.breaker"
    b = r.section(data.get("breaker"), bbase, ("failure_ratio", "min_polls", "window", "cooldown"))
    breaker = BreakerConfig(
        failure_ratio=r.number(b, "failure_ratio", bbase, 1.0, low=0.0, high=1.0, above_low=True),
        min_polls=r.integer(b, "min_polls", bbase, 10, low=1, high=1_000_000),
        window=r.duration(b, "window", bbase, 60.0),
        cooldown=r.duration(b, "cooldown", bbase, 30.0),
    )
    return PollingConfig(
        interval=interval,
        fast_interval=fast,
        jitter=r.number(data, "jitter", base, 0.1, low=0.0, high=0.5),
        concurrency=r.integer(data, "concurrency", base, 32, low=1, high=10_000),
        requests_per_second=r.number(
            data, "requests_per_second", base, 50.0, low=0.0, high=1_000_000.0, above_low=True
        ),
        unreachable_after=r.integer(data, "unreachable_after", base, 3, low=1, high=1000),
        staleness=staleness,
        error_backoff_max=backoff_max,
        breaker=breaker,
    )


def _read_server(r: _Reader, raw: Any) -> ServerConfig:
    data = r.section(raw, "server", ("listen", "tls", "basic_auth"))
    host, port = DEFAULT_LISTEN
    # Unquoted, YAML reads [::]:9708 as a list.
    listen = None if isinstance(data.get("listen"), list) else r.opt_text(data, "listen", "server")
    if isinstance(data.get("listen"), list):
        r.problem("server.listen", 'expected host:port; quote an IPv6 address, like listen: "[::]:9708"')
    elif listen is not None:
        try:
            host, port = _parse_listen(listen)
        except ValueError as exc:
            r.problem("server.listen", f"{exc}, got {listen!r}")

    base = "server.tls"
    tls = r.section(data.get("tls"), base, ("cert_file", "key_file"))
    cert_file = r.existing_file(tls, "cert_file", base)
    key_file = r.existing_file(tls, "key_file", base)
    for key, other in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if tls.get(key) is not None and tls.get(other) is None:
            r.problem(f"{base}.{other}", f"required with {key}")

    users: list[tuple[str, str]] = []
    base = "server.basic_auth"
    raw_users = data.get("basic_auth")
    if raw_users is not None and raw_users is not _UNRESOLVED and not isinstance(raw_users, dict):
        r.problem(base, f"expected a mapping of user names to bcrypt hashes, got {_kind(raw_users)}")
    elif isinstance(raw_users, dict):
        for user, hashed in raw_users.items():
            if not isinstance(user, str) or not user or ":" in user or _CONTROL.search(user):
                r.problem(base, f"user names must be non-empty strings without ':', got {_shown(user)}")
                continue
            here = _join(base, user)
            if hashed is _UNRESOLVED:
                continue
            if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed.strip()):
                r.problem(here, "expected a bcrypt hash starting $2a$, $2b$ or $2y$ (htpasswd -nBC 12 USER)")
                continue
            users.append((user, hashed.strip()))
    return ServerConfig(
        host=host, port=port, tls_cert_file=cert_file, tls_key_file=key_file, basic_auth=tuple(users)
    )


def _read_headers(r: _Reader, raw: Any, base: str) -> tuple[tuple[str, str], ...]:
    if raw is None or raw is _UNRESOLVED:
        return ()
    if not isinstance(raw, dict):
        r.problem(base, f"expected a mapping of header names to values, got {_kind(raw)}")
        return ()
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in raw.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            r.problem(base, f"not a valid HTTP header name: {_shown(name)}")
            continue
        here = _join(base, name)
        if name.lower() in seen:
            r.problem(here, "duplicate header (names are case-insensitive)")
        seen.add(name.lower())
        if value is _UNRESOLVED:
            continue
        if not isinstance(value, str):
            r.problem(here, f"expected a string, got {_kind(value)}")
        elif _CONTROL.search(value):
            r.problem(here, "must not contain control characters or line breaks")
        else:
            headers.append((name, value.strip()))
    return tuple(headers)


def _read_sinks(r: _Reader, raw: Any) -> SinksConfig:
    data = r.section(raw, "sinks", ("stdout", "file", "webhooks", "alertmanager", "events_buffer"))
    file_path = None
    file_data = r.mapping(data.get("file"), "sinks.file", ("path",))
    if data.get("file") is not None and file_data is not None:
        file_path = r.opt_text(file_data, "path", "sinks.file", required=True)

    hooks: list[WebhookConfig] = []
    for index, item in enumerate(r.sequence(data.get("webhooks"), "sinks.webhooks")):
        base = f"sinks.webhooks[{index}]"
        h = r.mapping(item, base, ("url", "timeout", "queue_size", "max_retries", "headers"))
        if h is None:
            continue
        hooks.append(
            WebhookConfig(
                url=r.url(h, "url", base, required=True) or "",
                timeout=r.duration(h, "timeout", base, 5.0),
                queue_size=r.integer(h, "queue_size", base, 1000, low=1, high=1_000_000),
                max_retries=r.integer(h, "max_retries", base, 5, low=0, high=100),
                headers=_read_headers(r, h.get("headers"), f"{base}.headers"),
            )
        )

    alertmanager = None
    base = "sinks.alertmanager"
    am = r.mapping(data.get("alertmanager"), base, ("url", "resend_interval", "timeout", "max_retries"))
    if data.get("alertmanager") is not None and am is not None:
        alertmanager = AlertmanagerConfig(
            url=r.url(am, "url", base, required=True) or "",
            resend_interval=r.duration(am, "resend_interval", base, 60.0),
            timeout=r.duration(am, "timeout", base, 5.0),
            max_retries=r.integer(am, "max_retries", base, 5, low=0, high=100),
        )
    return SinksConfig(
        stdout=r.boolean(data, "stdout", "sinks", True),
        file_path=file_path,
        webhooks=tuple(hooks),
        alertmanager=alertmanager,
        events_buffer=r.integer(data, "events_buffer", "sinks", 1000, low=1, high=1_000_000),
    )


def parse_config(
    data: object, *, environ: Mapping[str, str] | None = None, source: str = "<config>"
) -> Config:
    """Validate already-parsed YAML data into a ``Config``; raises ``ConfigError`` naming every problem."""
    if not isinstance(data, dict):
        got = "an empty document" if data is None else _kind(data)
        raise ConfigError((f"{source}: expected a mapping at the top level, got {got}",))
    r = _Reader(os.environ if environ is None else environ, source)
    top = r.section(r.resolve(data, ""), "", _TOP_KEYS)
    foundry = _read_foundry(r, top.get("foundry"))
    deployments = _read_deployments(r, top.get("deployments"))
    discover = _read_discover(r, top.get("discover"))
    listed = any(isinstance(top.get(key), list) and top[key] for key in ("deployments", "discover"))
    if not listed and r.ok("deployments", "discover"):
        r.problem("deployments", "list at least one deployment here, or a model under discover")
    polling = _read_polling(r, top.get("polling"))
    server = _read_server(r, top.get("server"))
    sinks = _read_sinks(r, top.get("sinks"))
    state_data = r.section(top.get("state"), "state", ("path", "retention"))
    state = StateConfig(
        path=r.text(state_data, "path", "state", DEFAULT_STATE_PATH),
        retention=r.duration(state_data, "retention", "state", 7 * 86400.0),
    )
    log_data = r.section(top.get("logging"), "logging", ("level", "format"))
    logging_config = LoggingConfig(
        level=r.choice(log_data, "level", "logging", "info", LOG_LEVELS),
        format=r.choice(log_data, "format", "logging", "auto", LOG_FORMATS),
    )
    if r.problems:
        raise ConfigError(tuple(r.problems))

    # Every series carries the same label names, so a deployment without some label gets it empty.
    label_names = tuple(
        sorted(
            {name for _, _, labels in deployments for name in labels}
            | {n for _, _, labels, _ in discover for n in labels}
        )
    )

    def filled(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple((name, labels.get(name, "")) for name in label_names)

    return Config(
        foundry=foundry,
        # The RID is interned so that snapshots, which intern what they decode, share this one copy.
        deployments=tuple(
            DeploymentConfig(sys.intern(rid), name, filled(labels)) for rid, name, labels in deployments
        ),
        discover=tuple(
            DiscoverConfig(model_rid, branch, filled(labels), interval)
            for model_rid, branch, labels, interval in discover
        ),
        polling=polling,
        server=server,
        sinks=sinks,
        state=state,
        logging=logging_config,
        label_names=label_names,
        source=source,
    )


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys, which PyYAML would silently resolve (last one wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            # Merge keys (<<) may be overridden on purpose; only keys written out are compared.
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # Not str(exc): PyYAML quotes the offending line, which may hold a secret.
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"not valid YAML: {exc.problem or exc.context or 'syntax error'}{where}"
    return f"not valid YAML ({type(exc).__name__})"


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML file; every failure, an unreadable file included, is a ``ConfigError``."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as stream:
            raw = stream.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError((f"{source}: cannot be read ({exc.strerror or type(exc).__name__})",)) from None
    if len(raw) > _MAX_FILE_BYTES:
        raise ConfigError((f"{source}: larger than {_MAX_FILE_BYTES} bytes",))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError((f"{source}: not UTF-8 text",)) from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError((f"{source}: {_yaml_problem(exc)}",)) from None
    except RecursionError:
        raise ConfigError((f"{source}: not valid YAML: nested too deeply",)) from None
    return parse_config(data, environ=environ, source=source)


def _load_yaml(text: str) -> Any:
    loader = _StrictLoader(text)  # reads ahead: may already raise on a forbidden character
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


# --- output -----------------------------------------------------------------------------------------------


def _redacted_url(url: str, *, path_is_secret: bool) -> str:
    """``url`` without user info or query, and without its path when the path may be a credential."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    hidden = "@" in parts.netloc or bool(parts.query) or bool(parts.fragment)
    path = parts.path
    if path_is_secret and path not in ("", "/"):
        path, hidden = "", True
    return f"{parts.scheme}://{netloc}{path}" + ("/" + MASK if hidden else "")


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data in the file's layout, every secret replaced by ``***``."""
    f = config.foundry
    auth: dict[str, Any]
    if f.auth.method == "client_credentials":
        auth = {
            "client_id": f.auth.client_id,
            "client_secret": MASK,
            "scope": f.auth.scope,
            "token_url": f.auth.token_url,
        }
    elif f.auth.method == "token_file":
        auth = {"token_file": f.auth.token_file}
    else:
        auth = {"token": MASK}
    polling = config.polling
    server = config.server
    sinks = config.sinks
    host = f"[{server.host}]" if ":" in server.host else server.host
    am = sinks.alertmanager
    return {
        "foundry": {
            "base_url": f.base_url,
            "auth": auth,
            "timeouts": {
                "connect": format_duration(f.timeouts.connect),
                "read": format_duration(f.timeouts.read),
                "total": format_duration(f.timeouts.total),
            },
            "tls": {"ca_bundle": f.tls.ca_bundle, "insecure_skip_verify": f.tls.insecure_skip_verify},
            "retries": {
                "attempts": f.retries.attempts,
                "backoff_initial": format_duration(f.retries.backoff_initial),
                "backoff_max": format_duration(f.retries.backoff_max),
                "retry_after_max": format_duration(f.retries.retry_after_max),
            },
            "max_body_bytes": f.max_body_bytes,
        },
        "deployments": [{"rid": d.rid, "name": d.name, "labels": dict(d.labels)} for d in config.deployments],
        "discover": [
            {
                "model_rid": d.model_rid,
                "branch": d.branch,
                "labels": dict(d.labels),
                "interval": format_duration(d.interval),
            }
            for d in config.discover
        ],
        "polling": {
            "interval": format_duration(polling.interval),
            "fast_interval": format_duration(polling.fast_interval),
            "jitter": polling.jitter,
            "concurrency": polling.concurrency,
            "requests_per_second": polling.requests_per_second,
            "unreachable_after": polling.unreachable_after,
            "staleness": format_duration(polling.staleness),
            "error_backoff_max": format_duration(polling.error_backoff_max),
            "breaker": {
                "failure_ratio": polling.breaker.failure_ratio,
                "min_polls": polling.breaker.min_polls,
                "window": format_duration(polling.breaker.window),
                "cooldown": format_duration(polling.breaker.cooldown),
            },
        },
        "server": {
            "listen": f"{host}:{server.port}",
            "tls": None
            if server.tls_cert_file is None
            else {"cert_file": server.tls_cert_file, "key_file": server.tls_key_file},
            "basic_auth": {user: MASK for user, _ in server.basic_auth},
        },
        "sinks": {
            "stdout": sinks.stdout,
            "file": None if sinks.file_path is None else {"path": sinks.file_path},
            "webhooks": [
                {
                    "url": _redacted_url(hook.url, path_is_secret=True),
                    "timeout": format_duration(hook.timeout),
                    "queue_size": hook.queue_size,
                    "max_retries": hook.max_retries,
                    "headers": {name: MASK for name, _ in hook.headers},
                }
                for hook in sinks.webhooks
            ],
            "alertmanager": None
            if am is None
            else {
                "url": _redacted_url(am.url, path_is_secret=False),
                "resend_interval": format_duration(am.resend_interval),
                "timeout": format_duration(am.timeout),
                "max_retries": am.max_retries,
            },
            "events_buffer": sinks.events_buffer,
        },
        "state": {"path": config.state.path, "retention": format_duration(config.state.retention)},
        "logging": {"level": config.logging.level, "format": config.logging.format},
        "label_names": list(config.label_names),
    }


def config_hash(config: Config) -> str:
    """A short id of the effective configuration (the file's path aside), stable across restarts.

    Secrets enter only through scrypt, a deliberately slow digest: the id is published as a metric label,
    and a fast hash of a short token could be reversed by trying every candidate.
    """
    f = config.foundry
    secrets = [
        f.auth.token,
        f.auth.client_secret,
        [[hook.url, list(hook.headers)] for hook in config.sinks.webhooks],
        None if config.sinks.alertmanager is None else config.sinks.alertmanager.url,
        list(config.server.basic_auth),
    ]
    secret_digest = hashlib.scrypt(
        json.dumps(secrets).encode(), salt=b"foundry-monitor config_hash v1", n=1 << 14, r=8, p=1, dklen=32
    )
    body = json.dumps(masked(config), sort_keys=True).encode()
    return hashlib.sha256(body + b"\0" + secret_digest).hexdigest()[:16]
