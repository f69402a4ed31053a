"""The configuration's models, in the file's layout: each setting declared once, with its type and default.

Cross-field checks raise ``Problems`` at the key paths they concern. They run once a section's own fields
are valid, and a default that follows another setting is left out when that one is bad: one mistake is one
problem.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    ValidationInfo,
    computed_field,
    field_validator,
    model_serializer,
    model_validator,
)

from monitor.config import fields as f
from monitor.config.fields import format_duration

TOKEN_PATH: Final = "/multipass/api/oauth2/token"  # noqa: S105 - a URL path, not a password
_CREDENTIALS: Final = ("token", "token_file", "client_id", "client_secret")
_METHODS: Final = ({"token"}, {"token_file"}, {"client_id", "client_secret"})


def _empty() -> Any:
    """A section left out is read as an empty one: its checks may still take values from the environment."""
    return {}


def _has_secret(annotation: Any) -> bool:
    return isinstance(annotation, f.Secret) or any(map(_has_secret, typing.get_args(annotation)))


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of ``model`` whose type holds a ``Secret``, directly or in a collection."""
    fields = model.model_fields.items()
    return frozenset(k for k, v in fields if _has_secret(v.annotation) or any(map(_has_secret, v.metadata)))


class Section(BaseModel):
    """A frozen mapping of the file: unknown keys are problems, and a null value counts as left out."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if bad := [key for key in data if not isinstance(key, str)]:
            raise ValueError(f"keys must be strings, got {f.shown(bad[0])}")
        return {key: value for key, value in data.items() if value is not None}

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        hidden = secret_fields(type(self))
        return ((name, value) for name, value in super().__repr_args__() if name not in hidden)


def _environ(info: ValidationInfo) -> dict[str, str]:
    environ: dict[str, str] = (info.context or {}).get("environ", {})
    return environ


def _check(*problems: tuple[bool, tuple[str | int, ...], str]) -> None:
    """Raise the problems whose condition holds, each at its key path."""
    if found := [(where, message) for wrong, where, message in problems if wrong]:
        raise f.Problems(*found)


def _not_shorter(key: str, value: float, other: str, limit: float) -> tuple[bool, tuple[str], str]:
    return value < limit, (key,), f"must not be shorter than {other} ({format_duration(limit)})"


def _not_longer(key: str, value: float, other: str, limit: float) -> tuple[bool, tuple[str], str]:
    return value > limit, (key,), f"must not be longer than {other} ({format_duration(limit)})"


class AuthConfig(Section):
    """How the client authenticates: exactly one of a token, a token file or OAuth2 client credentials."""

    token: f.Token | None = Field(None, description="A bearer token.")
    token_file: f.ExistingFile | None = Field(
        None, description="A file holding the token, re-read on change."
    )
    client_id: f.Text | None = Field(None, description="OAuth2 client id of a service user.")
    client_secret: f.SecretText | None = Field(None, description="OAuth2 client secret, with client_id.")
    scope: f.Text = Field("api:models-read", description="OAuth2 scope asked for with client credentials.")
    token_url: f.HttpUrl = Field("", description="OAuth2 token endpoint (default: on base_url).")

    @property
    def method(self) -> Literal["token", "token_file", "client_credentials"]:
        if self.client_id is not None:
            return "client_credentials"
        return "token_file" if self.token_file is not None else "token"

    @model_validator(mode="before")
    @classmethod
    def _one_method(cls, data: Any, info: ValidationInfo) -> Any:
        """Exactly one method; none in the file means the SDK's environment variables."""
        if not isinstance(data, dict):
            return data
        given = {key for key in _CREDENTIALS if data.get(key) is not None}
        if sum(bool(given & keys) for keys in _METHODS) > 1:
            raise ValueError(
                "give exactly one of token, token_file, or client_id with client_secret; "
                f"got {', '.join(sorted(given))}"
            )
        for key, other in (("client_id", "client_secret"), ("client_secret", "client_id")):
            _check((given == {key}, (other,), f"required with {key}"))
        return data if given else {**data, **_credentials_from(_environ(info))}

    @model_serializer(mode="wrap")
    def _only_the_method(self, write: Callable[[Self], dict[str, Any]]) -> dict[str, Any]:
        out = write(self)
        keys = ("client_id", "client_secret", "scope", "token_url")
        return {key: out[key] for key in (keys if self.method == "client_credentials" else (self.method,))}


def _credentials_from(environ: dict[str, str]) -> dict[str, str]:
    token, client_id, client_secret = (
        environ.get(f"FOUNDRY_{name}", "").strip() for name in ("TOKEN", "CLIENT_ID", "CLIENT_SECRET")
    )
    if token:
        if f.CONTROL.search(token) or any(c.isspace() for c in token):
            raise ValueError("FOUNDRY_TOKEN must not contain whitespace or control characters")
        return {"token": token}
    if client_id and client_secret:
        if f.CONTROL.search(client_id + client_secret):
            raise ValueError(
                "FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET must not contain control characters"
            )
        return {"client_id": client_id, "client_secret": client_secret}
    if client_id or client_secret:
        raise ValueError("FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET must be set together")
    raise ValueError(
        "required: give token, token_file, or client_id and client_secret "
        "(or set FOUNDRY_TOKEN, or FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET, in the environment)"
    )


class TimeoutsConfig(Section):
    """Per-attempt timeouts. ``read`` bounds each socket read: a total alone can hang on a stalled body."""

    total: f.Duration = Field(30.0, description="A whole request, connect and read included.")
    connect: f.Duration = Field(default_factory=lambda d: min(5.0, d["total"]), description="min(5s, total)")
    read: f.Duration = Field(default_factory=lambda d: min(10.0, d["total"]), description="Per socket read.")

    @model_validator(mode="after")
    def _within_total(self) -> Self:
        total, name = self.total, "foundry.timeouts.total"
        _check(_not_longer("connect", self.connect, name, total), _not_longer("read", self.read, name, total))
        return self


class TlsConfig(Section):
    ca_bundle: f.ExistingFile | None = Field(None, description="CA certificates to verify Foundry with.")
    insecure_skip_verify: bool = Field(False, description="Do not verify Foundry's certificate.")


class RetryConfig(Section):
    """How many attempts a request gets and how long to wait between them."""

    attempts: int = Field(3, ge=1, le=20, description="Attempts per request; 1 means no retry.")
    backoff_initial: f.Duration = Field(0.2, description="The first backoff ceiling; doubles per attempt.")
    backoff_max: f.Duration = Field(
        default_factory=lambda d: max(10.0, d["backoff_initial"]), description="max(10s, backoff_initial)"
    )
    retry_after_max: f.DurationOrZero = Field(60.0, description="A longer Retry-After is capped to this.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        initial = self.backoff_initial
        _check(_not_shorter("backoff_max", self.backoff_max, "foundry.retries.backoff_initial", initial))
        return self


class FoundryConfig(Section):
    base_url: f.BaseUrl = Field(
        default_factory=lambda: None, validate_default=True, description="Scheme, host, port."
    )
    auth: AuthConfig = Field(
        default_factory=_empty, validate_default=True, description="How to authenticate."
    )
    timeouts: TimeoutsConfig = Field(TimeoutsConfig(), description="Per-attempt timeouts.")
    tls: TlsConfig = Field(TlsConfig(), description="TLS settings for Foundry.")
    retries: RetryConfig = Field(RetryConfig(), description="Retries of failed requests.")
    max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 30, description="Larger answers fail.")

    @model_validator(mode="before")
    @classmethod
    def _from_base_url(cls, data: Any, info: ValidationInfo) -> Any:
        """FOUNDRY_HOSTNAME when base_url is left out; the default token URL on the base URL."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("base_url") is None and (host := _environ(info).get("FOUNDRY_HOSTNAME", "").strip()):
            try:
                data["base_url"] = f.normalize_base_url(host)
            except ValueError as exc:
                raise f.Problems((("base_url",), f"from FOUNDRY_HOSTNAME: {exc}")) from None
        auth = data.get("auth") or {}
        if isinstance(data.get("base_url"), str) and isinstance(auth, dict) and auth.get("token_url") is None:
            with contextlib.suppress(ValueError):  # reported by base_url itself
                data["auth"] = {**auth, "token_url": f.normalize_base_url(data["base_url"]) + TOKEN_PATH}
        return data


class DeploymentConfig(Section):
    """A deployment to watch. ``labels`` holds every name in ``Config.label_names``, missing ones ``""``."""

    rid: f.Rid = Field(description="The live deployment's RID.")
    name: f.Name = Field(default_factory=lambda d: d["rid"], description="The deployment label (the RID).")
    labels: f.Labels = Field((), description="Static labels of every series of the deployment.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """A bare string is short for ``{rid: ...}``."""
        return {"rid": data} if isinstance(data, str) else data


class DiscoverConfig(Section):
    """A model whose deployments are listed every ``interval``; labels filled as for ``DeploymentConfig``."""

    model_rid: f.Rid = Field(description="The model whose live deployments are followed.")
    branch: f.Name | None = Field(None, description="Only deployments tracking this branch.")
    labels: f.Labels = Field((), description="Static labels of the deployments found.")
    interval: f.Duration = Field(300.0, description="How often to list the model's deployments.")


class BreakerConfig(Section):
    """Open when, among at least ``min_polls`` polls in the last ``window``, the share of upstream faults
    (5xx, timeouts, refused connections) reaches ``failure_ratio``; probe once after ``cooldown``."""

    failure_ratio: float = Field(1.0, gt=0.0, le=1.0, description="Opens at.")
    min_polls: int = Field(10, ge=1, le=1_000_000, description="Polls before it may open.")
    window: f.Duration = Field(60.0, description="The sliding window outcomes are counted in.")
    cooldown: f.Duration = Field(30.0, description="How long it stays open before one probe.")


class PollingConfig(Section):
    interval: f.Duration = Field(30.0, description="How often each deployment is polled.")
    fast_interval: f.Duration = Field(
        default_factory=lambda d: min(5.0, d["interval"]), description="For unsettled deployments."
    )
    jitter: float = Field(0.1, ge=0.0, le=0.5, description="Spread, a fraction of the interval.")
    concurrency: int = Field(32, ge=1, le=10_000, description="Requests in flight at once.")
    requests_per_second: float = Field(50.0, gt=0.0, le=1e6, description="One budget for all requests.")
    unreachable_after: int = Field(3, ge=1, le=1000, description="Failed polls in a row.")
    staleness: f.Duration = Field(default_factory=lambda d: 3 * d["interval"], description="Older is stale.")
    error_backoff_max: f.Duration = Field(
        default_factory=lambda d: max(300.0, d["interval"]),
        description="A failing deployment's longest wait.",
    )
    breaker: BreakerConfig = Field(BreakerConfig(), description="The upstream circuit breaker.")
    batch: f.Batch = Field("auto", description="auto: one list request per model and branch polls many.")

    @model_validator(mode="after")
    def _around_the_interval(self) -> Self:
        interval, name = self.interval, "polling.interval"
        _check(
            _not_longer("fast_interval", self.fast_interval, name, interval),
            _not_shorter("staleness", self.staleness, name, interval),
            _not_shorter("error_backoff_max", self.error_backoff_max, name, interval),
        )
        return self


class ServerTlsConfig(Section):
    cert_file: f.ExistingFile | None = Field(None, description="The server certificate (PEM).")
    key_file: f.ExistingFile | None = Field(None, description="Its private key (PEM).")

    @model_validator(mode="after")
    def _both(self) -> Self:
        cert, key = self.cert_file is None, self.key_file is None
        _check(
            (key > cert, ("key_file",), "required with cert_file"),
            (cert > key, ("cert_file",), "required with key_file"),
        )
        return self


class ServerConfig(Section):
    """Where ``/metrics`` and the API listen. ``basic_auth`` holds (user, bcrypt hash) pairs."""

    listen: f.Listen = Field(("0.0.0.0", 9708), description="host:port, IPv6 in brackets.")  # noqa: S104
    tls: ServerTlsConfig | None = Field(None, description="Serve HTTPS with these files.")
    basic_auth: f.Users = Field((), description="user: bcrypt hash (htpasswd -nBC 12 USER).")

    @property
    def host(self) -> str:
        return self.listen[0]

    @property
    def port(self) -> int:
        return self.listen[1]

    @property
    def tls_cert_file(self) -> str | None:
        return None if self.tls is None else self.tls.cert_file

    @property
    def tls_key_file(self) -> str | None:
        return None if self.tls is None else self.tls.key_file


class WebhookConfig(Section):
    url: f.WebhookUrl = Field(
        description="Where events are POSTed (Slack and Teams keep a secret in the path)."
    )
    timeout: f.Duration = Field(5.0, description="Per delivery attempt.")
    queue_size: int = Field(1000, ge=1, le=1_000_000, description="Events waiting to be sent.")
    max_retries: int = Field(5, ge=0, le=100, description="Retries of a failed delivery.")
    headers: f.Headers = Field((), description="Extra request headers; values are secrets.")


class AlertmanagerConfig(Section):
    url: f.AlertmanagerUrl = Field(description="The Alertmanager base URL.")
    resend_interval: f.Duration = Field(60.0, description="How often firing alerts are pushed again.")
    timeout: f.Duration = Field(5.0, description="Per push attempt.")
    max_retries: int = Field(5, ge=0, le=100, description="Retries of a failed push.")


class FileSinkConfig(Section):
    path: f.Text = Field(description="The JSON lines file events are appended to.")


class SinksConfig(Section):
    stdout: bool = Field(True, description="Write events to standard output.")
    file: FileSinkConfig | None = Field(None, description="Append events to a file.")
    webhooks: tuple[WebhookConfig, ...] = Field((), description="POST events to these URLs.")
    alertmanager: AlertmanagerConfig | None = Field(None, description="Push alerts to an Alertmanager.")
    events_buffer: int = Field(1000, ge=1, le=1_000_000, description="Recent events kept.")

    @property
    def file_path(self) -> str | None:
        return None if self.file is None else self.file.path


class StateConfig(Section):
    path: f.Text = Field("./state/monitor.sqlite3", description="The SQLite state and event outbox.")
    retention: f.Duration = Field(7 * 86400.0, description="How long delivered events stay in the outbox.")


class LoggingConfig(Section):
    level: Annotated[f.LogLevel, f.one_of(f.LogLevel)] = Field("info", description="The lowest level logged.")
    format: Annotated[f.LogFormat, f.one_of(f.LogFormat)] = Field(
        "auto", description="auto: json unless a tty."
    )


class Config(Section):
    """The whole validated configuration. ``label_names``: the static label set every deployment carries."""

    foundry: FoundryConfig = Field(
        default_factory=_empty, validate_default=True, description="The Foundry API."
    )
    deployments: tuple[DeploymentConfig, ...] = Field((), description="Deployments to watch, by RID.")
    discover: tuple[DiscoverConfig, ...] = Field((), description="Models whose deployments are followed.")
    polling: PollingConfig = Field(PollingConfig(), description="How often and how hard to poll.")
    server: ServerConfig = Field(ServerConfig(), description="The metrics and API server.")
    sinks: SinksConfig = Field(SinksConfig(), description="Where change events go.")
    state: StateConfig = Field(StateConfig(), description="Where state is kept.")
    logging: LoggingConfig = Field(LoggingConfig(), description="The service's own log.")
    _source: str = PrivateAttr("<config>")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label_names(self) -> tuple[str, ...]:
        entries: tuple[DeploymentConfig | DiscoverConfig, ...] = (*self.deployments, *self.discover)
        return tuple(name for name, _ in entries[0].labels) if entries else ()

    @property
    def source(self) -> str:
        """The file the configuration was read from."""
        return self._source

    @field_validator("deployments", "discover")
    @classmethod
    def _unique(cls, entries: tuple[Any, ...]) -> tuple[Any, ...]:
        first: dict[tuple[str, str | None], int] = {}
        found: list[tuple[bool, tuple[str | int, ...], str]] = []
        for index, entry in enumerate(entries):
            if isinstance(entry, DeploymentConfig):
                seen = first.setdefault((entry.rid, None), index)
                found.append(
                    (seen != index, (index, "rid"), f"duplicate: already listed as deployments[{seen}]")
                )
            else:
                seen = first.setdefault((entry.model_rid, entry.branch), index)
                message = f"duplicate: discover[{seen}] has the same model_rid and branch"
                found.append((seen != index, (index,), message))
        _check(*found)
        return entries

    @model_validator(mode="wrap")
    @classmethod
    def _one_label_set(cls, data: Any, handler: ModelWrapValidatorHandler[Config]) -> Config:
        """Every series carries the same label names, so an entry without some label gets it empty."""
        config = handler(data)
        none = not config.deployments and not config.discover
        _check((none, ("deployments",), "list at least one deployment here, or a model under discover"))
        entries: tuple[DeploymentConfig | DiscoverConfig, ...] = (*config.deployments, *config.discover)
        names = tuple(sorted({name for entry in entries for name, _ in entry.labels}))
        if all(tuple(name for name, _ in entry.labels) == names for entry in entries):
            return config

        def filled(entry: Any) -> Any:
            labels = dict(entry.labels)
            return entry.model_copy(update={"labels": tuple((name, labels.get(name, "")) for name in names)})

        update = {
            "deployments": tuple(map(filled, config.deployments)),
            "discover": tuple(map(filled, config.discover)),
        }
        return config.model_copy(update=update)
