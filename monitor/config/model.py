"""The configuration's sections, in the file's layout: each setting declared once, with type and default."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Literal, Self
from urllib.parse import parse_qs, urlsplit

import pydantic
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic import ModelWrapValidatorHandler as Handler

from monitor.config import fields as f
from monitor.config.fields import check, format_duration
from monitor.formats import EventFormat
from monitor.shaping import FlapMode, Shaping

TOKEN_PATH: Final = "/multipass/api/oauth2/token"  # noqa: S105 - a URL path, not a password
_METHODS: Final = ({"token"}, {"token_file"}, {"client_id", "client_secret"})
#: A section left out is read as an empty one: its checks may still take values from the environment.
_EMPTY: Final[Any] = {"default_factory": dict, "validate_default": True}
_DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
_STRICT: Final = ConfigDict(extra="forbid", hide_input_in_errors=True, allow_inf_nan=False)


def _has_secret(annotation: Any) -> bool:
    return isinstance(annotation, f.Secret) or any(map(_has_secret, typing.get_args(annotation)))


def fields_of(model: type[Any]) -> dict[str, pydantic.fields.FieldInfo]:
    """The declared fields of a section: a model's, or a slotted dataclass's (see ``_entry``)."""
    return typing.cast(dict[str, pydantic.fields.FieldInfo], model.__pydantic_fields__)


def secret_fields(model: type[Any]) -> frozenset[str]:
    """The fields of ``model`` whose type holds a ``Secret``, directly or in a collection."""
    fields = fields_of(model).items()
    return frozenset(k for k, v in fields if _has_secret(v.annotation) or any(map(_has_secret, v.metadata)))


def _ordered(where: str, *rules: tuple[str, str, str]) -> Any:
    """A section's ``(key, "longer" or "shorter", other)`` rules: duration ``key`` must not be that than
    ``other``. Like every cross-field check, it runs once the fields are valid: one mistake, one problem."""

    def ordered(section: Any) -> Any:
        out = []
        for key, way, other in rules:
            value, limit = getattr(section, key), getattr(section, other)
            wrong = value > limit if way == "longer" else value < limit
            out.append((wrong, (key,), f"must not be {way} than {where}.{other} ({format_duration(limit)})"))
        check(*out)
        return section

    return model_validator(mode="after")(ordered)


class NullIsAbsent:
    """A mapping of the file, as a model or a dataclass: a null value counts as left out."""

    __slots__ = ()

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class Section(NullIsAbsent, BaseModel):
    """A frozen mapping of the file: unknown keys are problems, and a null value counts as left out."""

    model_config = ConfigDict(frozen=True, **_STRICT)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        hidden = secret_fields(type(self))
        return ((name, value) for name, value in super().__repr_args__() if name not in hidden)


class AuthConfig(Section):
    """How the client authenticates: exactly one of a token, a token file or OAuth2 client credentials."""

    token: f.Token | None = Field(None, description="A bearer token.")
    token_file: f.ExistingFile | None = Field(None, description="A file with the token, re-read on change.")
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
        given = {key for key in set().union(*_METHODS) if data.get(key) is not None}
        if sum(bool(given & keys) for keys in _METHODS) > 1:
            got = ", ".join(sorted(given))
            f.fail(f"give exactly one of token, token_file, or client_id with client_secret; got {got}")
        check(
            (given == {"client_id"}, ("client_secret",), "required with client_id"),
            (given == {"client_secret"}, ("client_id",), "required with client_secret"),
        )
        return data if given else {**data, **_credentials_from((info.context or {}).get("environ", {}))}

    @pydantic.model_serializer(mode="wrap")
    def _only_the_method(self, write: Callable[[Self], dict[str, Any]]) -> dict[str, Any]:
        out, keys = write(self), ("client_id", "client_secret", "scope", "token_url")
        return {key: out[key] for key in (keys if self.method == "client_credentials" else (self.method,))}


def _credentials_from(environ: Mapping[str, str]) -> dict[str, str]:
    """The SDK's environment variables, for a file without an auth method; the fields check their values."""
    token, client_id, secret = (
        environ.get(f"FOUNDRY_{n}", "").strip() for n in ("TOKEN", "CLIENT_ID", "CLIENT_SECRET")
    )
    if token or (client_id and secret):
        return {"token": token} if token else {"client_id": client_id, "client_secret": secret}
    if client_id or secret:
        f.fail("FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET must be set together")
    return f.fail(
        "required: give token, token_file, or client_id and client_secret "
        "(or set FOUNDRY_TOKEN, or FOUNDRY_CLIENT_ID and FOUNDRY_CLIENT_SECRET, in the environment)"
    )


class TimeoutsConfig(Section):
    """Per-attempt timeouts. ``read`` bounds each socket read: a total alone can hang on a stalled body."""

    total: f.Duration = Field(30.0, description="A whole request, connect and read included.")
    connect: f.Duration = Field(default_factory=lambda d: min(5.0, d["total"]), description="min(5s, total)")
    read: f.Duration = Field(default_factory=lambda d: min(10.0, d["total"]), description="Per socket read.")
    _order = _ordered("foundry.timeouts", ("connect", "longer", "total"), ("read", "longer", "total"))


class TlsConfig(Section):
    ca_bundle: f.ExistingFile | None = Field(None, description="CA certificates to verify Foundry with.")
    insecure_skip_verify: bool = Field(False, description="Do not verify Foundry's certificate.")


class RetryConfig(Section):
    """How many attempts a request gets and how long to wait between them."""

    attempts: f.Int = Field(3, ge=1, le=20, description="Attempts per request; 1 means no retry.")
    backoff_initial: f.Duration = Field(0.2, description="The first backoff ceiling; doubles per attempt.")
    backoff_max: f.Duration = Field(
        default_factory=lambda d: max(10.0, d["backoff_initial"]), description="max(10s, backoff_initial)"
    )
    retry_after_max: f.DurationOrZero = Field(60.0, description="A longer Retry-After is capped to this.")
    _order = _ordered("foundry.retries", ("backoff_max", "shorter", "backoff_initial"))


class FoundryConfig(Section):
    base_url: f.BaseUrl = Field(None, validate_default=True, description="Scheme, host, port.")
    auth: AuthConfig = Field(**_EMPTY, description="How to authenticate.")
    timeouts: TimeoutsConfig = Field(TimeoutsConfig(), description="Per-attempt timeouts.")
    tls: TlsConfig = Field(TlsConfig(), description="TLS settings for Foundry.")
    retries: RetryConfig = Field(RetryConfig(), description="Retries of failed requests.")
    max_body_bytes: f.Int = Field(1 << 20, ge=1024, le=1 << 30, description="Larger answers fail.")

    @model_validator(mode="wrap")
    @classmethod
    def _token_url_on_base_url(cls, data: Any, handler: Handler[FoundryConfig]) -> FoundryConfig:
        out = handler(data)
        auth = out.auth.model_copy(update={"token_url": out.auth.token_url or out.base_url + TOKEN_PATH})
        return out.model_copy(update={"auth": auth})


#: Sections a configuration may hold thousands of are slotted dataclasses, not models: a model instance costs
#: ~0.5 KB more (its ``__dict__`` and fields-set), 5 MB at 10,000 deployments.
_entry = pydantic.dataclasses.dataclass(frozen=True, slots=True, config=_STRICT)


@_entry
class DeploymentConfig(NullIsAbsent):
    """A deployment to watch. ``labels`` holds every name in ``Config.label_names``, missing ones ``""``."""

    rid: f.Rid = Field(description="The live deployment's RID.")
    name: f.Name = Field(default_factory=lambda d: d["rid"], description="The deployment label (the RID).")
    labels: f.Labels = Field((), description="Static labels of every series of the deployment.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """A bare string is short for ``{rid: ...}``."""
        return {"rid": data} if isinstance(data, str) else data


@_entry
class DiscoverConfig(NullIsAbsent):
    """A model whose deployments are listed every ``interval``; labels filled as for ``DeploymentConfig``."""

    model_rid: f.Rid = Field(description="The model whose live deployments are followed.")
    branch: f.Name | None = Field(None, description="Only deployments tracking this branch.")
    labels: f.Labels = Field((), description="Static labels of the deployments found.")
    interval: f.Duration = Field(300.0, description="How often to list the model's deployments.")


class BreakerConfig(Section):
    """Open when, among at least ``min_polls`` polls in the last ``window``, the share of upstream faults
    (5xx, timeouts, refused connections) reaches ``failure_ratio``; probe once after ``cooldown``."""

    failure_ratio: f.Number = Field(1.0, gt=0.0, le=1.0, description="Opens at.")
    min_polls: f.Int = Field(10, ge=1, le=1_000_000, description="Polls before it may open.")
    window: f.Duration = Field(60.0, description="The sliding window outcomes are counted in.")
    cooldown: f.Duration = Field(30.0, description="How long it stays open before one probe.")


class PollingConfig(Section):
    interval: f.Duration = Field(30.0, description="How often each deployment is polled.")
    fast_interval: f.Duration = Field(
        default_factory=lambda d: min(5.0, d["interval"]), description="For unsettled deployments."
    )
    jitter: f.Number = Field(0.1, ge=0.0, le=0.5, description="Spread, a fraction of the interval.")
    concurrency: f.Int = Field(32, ge=1, le=10_000, description="Requests in flight at once.")
    requests_per_second: f.Number = Field(50.0, gt=0.0, le=1e6, description="One budget for all requests.")
    unreachable_after: f.Int = Field(3, ge=1, le=1000, description="Failed polls in a row.")
    staleness: f.Duration = Field(default_factory=lambda d: 3 * d["interval"], description="Older is stale.")
    error_backoff_max: f.Duration = Field(
        default_factory=lambda d: max(300.0, d["interval"]), description="Longest backoff when failing."
    )
    breaker: BreakerConfig = Field(BreakerConfig(), description="The upstream circuit breaker.")
    versions_interval: f.Duration = Field(300.0, description="How often each branch's versions are listed.")
    rollout_grace: f.Duration = Field(900.0, description="Behind its branch's newest version longer: stuck.")
    batch: f.Batch = Field("auto", description="auto: one list request per model and branch polls many.")
    _order = _ordered(
        "polling",
        ("fast_interval", "longer", "interval"),
        ("staleness", "shorter", "interval"),
        ("error_backoff_max", "shorter", "interval"),
    )


class ServerTlsConfig(Section):
    cert_file: f.ExistingFile = Field(description="The server certificate (PEM).")
    key_file: f.ExistingFile = Field(description="Its private key (PEM).")


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


class OutputConfig(Section):
    """How a sink writes events, and what it sends of them (``monitor.shaping``)."""

    format: f.Lower[EventFormat] = Field(EventFormat.NATIVE, description="native JSON, or CloudEvents 1.0.")
    min_duration: f.DurationOrZero = Field(0.0, description="A shorter FAILED/DEGRADED is a flap (0s: off).")
    flaps: f.Lower[FlapMode] = Field(FlapMode.SUMMARY, description="A flap: one deployment.flapped, or none.")
    recovery: bool = Field(False, description="Send deployment.healthy when ACTIVE and ready again.")

    @property
    def shaping(self) -> Shaping:
        return Shaping(self.min_duration, self.flaps, self.recovery)


#: Events as lines on standard output.
StdoutConfig = OutputConfig


class WebhookConfig(OutputConfig):
    url: f.WebhookUrl = Field(description="Where events are POSTed (Slack, Teams: a secret in the path).")
    timeout: f.Duration = Field(5.0, description="Per delivery attempt.")
    queue_size: f.Int = Field(1000, ge=1, le=1_000_000, description="Events waiting to be sent.")
    max_retries: f.Int = Field(5, ge=0, le=100, description="Retries of a failed delivery.")
    headers: f.Headers = Field((), description="Extra request headers; values are secrets.")


class AlertmanagerConfig(Section):
    url: f.AlertmanagerUrl = Field(description="The Alertmanager base URL.")
    resend_interval: f.Duration = Field(60.0, description="How often firing alerts are pushed again.")
    timeout: f.Duration = Field(5.0, description="Per push attempt.")
    max_retries: f.Int = Field(5, ge=0, le=100, description="Retries of a failed push.")


class FileSinkConfig(OutputConfig):
    path: f.Text = Field(description="The JSON lines file events are appended to.")


def _on_off_or_settings(schema: dict[str, Any]) -> None:
    # Off is written false, not null (null is read as left out).
    schema["anyOf"] = [{"type": "boolean"} if kind == {"type": "null"} else kind for kind in schema["anyOf"]]


class SinksConfig(Section):
    stdout: StdoutConfig | None = Field(
        StdoutConfig(),
        description="Write events to standard output: true, false, or its settings.",
        json_schema_extra=_on_off_or_settings,
    )
    file: FileSinkConfig | None = Field(None, description="Append events to a file.")
    webhooks: tuple[WebhookConfig, ...] = Field((), description="POST events to these URLs.")
    alertmanager: AlertmanagerConfig | None = Field(None, description="Push alerts to an Alertmanager.")
    events_buffer: f.Int = Field(1000, ge=1, le=1_000_000, description="Recent events kept.")

    @field_validator("stdout", mode="before")
    @classmethod
    def _on_off_or_how(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return {} if value else None
        if isinstance(value, dict | StdoutConfig):
            return value
        raise ValueError(f"expected true or false, or a mapping of its settings, got {f.shown(value)}")

    @pydantic.field_serializer("stdout")
    def _off_is_false(self, value: StdoutConfig | None) -> StdoutConfig | bool:
        # Written out as null it would read back as left out: on.
        return False if value is None else value


class StateConfig(Section):
    """Where the state lives: a SQLite file, or a PostgreSQL database several processes may share."""

    backend: f.Lower[Literal["sqlite", "postgres"]] = Field("sqlite", description="sqlite or postgres.")
    path: f.Text = Field("./state/monitor.sqlite3", description="The SQLite state and event outbox.")
    dsn: f.Text | None = Field(None, description="postgresql://user@host:port/database, no password.")
    password: f.SecretText | None = Field(None, description="The database password, e.g. ${DB_PASSWORD}.")
    password_file: f.ExistingFile | None = Field(None, description="A file holding the database password.")
    retention: f.Duration = Field(7 * 86400.0, description="How long delivered events stay in the outbox.")
    buffer_events: f.Int = Field(100_000, ge=1, le=10_000_000, description="Events held while it is down.")
    lease: f.Duration = Field(15.0, description="postgres: how long a replica's lease on a deployment lasts.")
    heartbeat: f.Duration = Field(
        default_factory=lambda d: d["lease"] / 3, description="postgres: heartbeat and renewal; lease/3"
    )

    @field_validator("dsn")
    @classmethod
    def _postgres_url(cls, dsn: str) -> str:
        parts = urlsplit(dsn)
        check(
            (parts.scheme not in ("postgresql", "postgres"), (), "expected a postgresql:// URL"),
            (
                parts.password is not None or "password" in parse_qs(parts.query),
                (),
                "must not hold a password: use password_file or PGPASSWORD",
            ),
        )
        return dsn

    @model_validator(mode="after")
    def _dsn_for_postgres(self) -> Self:
        check(
            (self.backend == "postgres" and self.dsn is None, ("dsn",), "required with backend postgres"),
            (None not in (self.password, self.password_file), ("password",), "not with password_file"),
            (self.heartbeat >= self.lease, ("heartbeat",), "must be shorter than lease"),
        )
        return self


class LoggingConfig(Section):
    level: f.LogLevel = Field("info", description="The lowest level logged.")
    format: f.LogFormat = Field("auto", description="auto: json unless a tty.")


class Config(Section):
    """The whole validated configuration. ``label_names``: the static label set every deployment carries."""

    model_config = ConfigDict(title="foundry-monitor configuration", json_schema_extra={"$schema": _DRAFT})
    foundry: FoundryConfig = Field(**_EMPTY, description="The Foundry API.")
    deployments: tuple[DeploymentConfig, ...] = Field((), description="Deployments to watch, by RID.")
    discover: tuple[DiscoverConfig, ...] = Field((), description="Models whose deployments are followed.")
    polling: PollingConfig = Field(PollingConfig(), description="How often and how hard to poll.")
    server: ServerConfig = Field(ServerConfig(), description="The metrics and API server.")
    sinks: SinksConfig = Field(SinksConfig(), description="Where change events go.")
    state: StateConfig = Field(StateConfig(), description="Where state is kept.")
    logging: LoggingConfig = Field(LoggingConfig(), description="The service's own log.")
    _source: str = "<config>"

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
    def _unique(cls, entries: tuple[Any, ...], info: ValidationInfo) -> tuple[Any, ...]:
        keys = [(e.rid,) if isinstance(e, DeploymentConfig) else (e.model_rid, e.branch) for e in entries]
        seen: dict[tuple[Any, ...], int] = {}  # first index of each key: list.index would be quadratic
        first = [seen.setdefault(key, i) for i, key in enumerate(keys)]
        at = ("rid",) if info.field_name == "deployments" else ()
        check(*((j < i, (i, *at), f"duplicate of {info.field_name}[{j}]") for i, j in enumerate(first)))
        return entries

    @model_validator(mode="wrap")
    @classmethod
    def _one_label_set(cls, data: Any, handler: Handler[Config]) -> Config:
        """Every series carries the same label names, so an entry without some label gets it empty."""
        config = handler(data)
        entries: tuple[DeploymentConfig | DiscoverConfig, ...] = (*config.deployments, *config.discover)
        check((not entries, ("deployments",), "list at least one deployment, or a model under discover"))
        names = sorted({name for entry in entries for name, _ in entry.labels})

        def filled(entry: Any) -> Any:
            labels = dict(entry.labels)
            # replace() validates again, and labels are read as a mapping (in this order).
            return dataclasses.replace(entry, labels={name: labels.get(name, "") for name in names})

        return config.model_copy(
            update={key: tuple(map(filled, getattr(config, key))) for key in ("deployments", "discover")}
        )
