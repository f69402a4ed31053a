"""The field types of the configuration: each one parses, bounds, serialises and describes itself.

A check raises ``ValueError`` with the problem's text; texts never repeat a secret or a URL, only its kind.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, cast, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, GetCoreSchemaHandler, GetJsonSchemaHandler, SerializationInfo
from pydantic_core import core_schema

from monitor.model import RID_PATTERN

#: What a secret is replaced with in masked output.
MASK: Final = "***"
#: Labels the monitor puts on its own series (or Prometheus on every target); static labels may not use them.
RESERVED_LABELS: Final = frozenset(
    {"rid", "deployment", "state", "from_state", "to_state", "field", "error", "model_rid"}
    | {"model_version_rid", "branch", "gpu_type", "le", "quantile", "job", "instance"}
    | {"alertname", "severity", "source"}  # set on the alerts the Alertmanager sink pushes
)
PLAIN_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
#: A bare number of seconds, or each unit at most once from the largest to the smallest.
_DURATION = re.compile(
    rf"({_NUMBER})|" + "".join(rf"(?:({_NUMBER}){unit})?" for unit in ("d", "h", "m", "s", "ms"))
)
_UNITS: Final = (86400.0, 3600.0, 60.0, 1.0)
#: The longest duration any setting takes: longer ones are typos, and would overflow some event loops' timers.
MAX_DURATION: Final = 30 * 86400.0
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_BCRYPT = r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, ``1m30s`` (largest unit first) or a bare number.

    Raises ``ValueError`` for anything else, including negative, infinite and NaN values.
    """
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError("expected a duration like 30s or 5m")  # noqa: TRY004 - one type for every bad input
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if isinstance(text, str) and (match is None or not any(match.groups())):
        raise ValueError("expected a duration like 30s or 5m, units from d to ms, each once")
    try:
        seconds = float(text) if match is None else _seconds(match.groups())
    except OverflowError:
        raise ValueError("duration out of range") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite, non-negative length of time")
    return seconds


def _seconds(groups: tuple[str | None, ...]) -> float:
    bare, *units, milliseconds = groups
    if bare is not None:
        return float(bare)
    total = sum(float(count) * unit for count, unit in zip(units, _UNITS, strict=True) if count)
    # Dividing by 1000 is exact where multiplying by 0.001 is not: 500ms is exactly 0.5.
    return total + float(milliseconds) / 1000 if milliseconds else total


def format_duration(seconds: float) -> str:
    """The shortest text ``parse_duration`` reads back as exactly ``seconds`` (``90.0`` -> ``1m30s``)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite, non-negative length of time")
    if seconds != int(seconds):
        return f"{seconds!r}s"
    rest, parts = int(seconds), []
    for unit, size in zip("dhm", _UNITS, strict=False):
        count, rest = divmod(rest, int(size))
        parts += [f"{count}{unit}"] * bool(count)
    return "".join(parts) + (f"{rest}s" if rest or not parts else "")


class Problems(ValueError):
    """Problems found by one check across a value, each at a key path relative to that value."""

    def __init__(self, *problems: tuple[tuple[str | int, ...], str]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def kind(value: Any) -> str:
    """What ``value`` is, for a message that must not show the value itself."""
    kinds = ((type(None), "null"), (bool, "a boolean"), (int | float, "a number"), (str, "a string"))
    for types, name in (*kinds, (list, "a list"), (dict, "a mapping")):
        if isinstance(value, types):
            return name
    return f"a {type(value).__name__}"


def shown(value: Any, *, secret: bool = False) -> str:
    """``value`` for a problem message: its repr when it is a plain scalar and not a secret, else its kind."""
    if secret or isinstance(value, bool) or not isinstance(value, str | int | float):
        return kind(value)
    text = repr(value)
    return text if len(text) <= 80 else text[:76] + "...'"


@dataclass(frozen=True, eq=False)
class Check:
    """Annotated metadata: a check run before the type's own validation, and the JSON Schema it implies."""

    validate: Callable[[Any], Any]
    schema: dict[str, Any] = field(default_factory=dict)
    #: The schema replaces the core type's (a duration is a number, or a string like 30s).
    replace: bool = False
    #: How the value is written out in JSON mode (and so in ``masked``), when not as itself.
    write: Callable[[Any], Any] | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        write = None if self.write is None else core_schema.plain_serializer_function_ser_schema(self.write)
        if write is not None:
            write["when_used"] = "json"
        return core_schema.no_info_before_validator_function(
            self.validate, handler(source), serialization=write
        )

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return dict(self.schema) if self.replace else {**handler(schema), **self.schema}


def _hide(_: str) -> str:
    return MASK


@dataclass(frozen=True, eq=False)
class Secret:
    """Marks a secret: ``redact``-ed when serialised with context ``{"mask": True}``, left out of repr and
    problem texts, and ``writeOnly`` in the JSON Schema."""

    redact: Callable[[str], str] = _hide

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = cast(dict[str, Any], handler(source))
        schema["serialization"] = core_schema.plain_serializer_function_ser_schema(self._write, info_arg=True)
        return cast(core_schema.CoreSchema, schema)

    def _write(self, value: str, info: SerializationInfo) -> str:
        return self.redact(value) if (info.context or {}).get("mask") else value

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {**handler(schema), "writeOnly": True}


class Pairs:
    """Annotated metadata: ``tuple[tuple[K, V], ...]`` read and written as a mapping of K to V."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        key, value = get_args(get_args(source)[0])
        mapping = core_schema.dict_schema(handler.generate_schema(key), handler.generate_schema(value))
        return core_schema.no_info_after_validator_function(
            lambda items: tuple(items.items()),
            mapping,
            serialization=core_schema.wrap_serializer_function_ser_schema(
                lambda pairs, write: write(dict(pairs)), schema=mapping
            ),
        )


def text_value(value: Any, *, limit: int = 4096, secret: bool = False, empty: bool = False) -> str:
    """``value`` stripped, when it is a string of at most ``limit`` characters without control characters."""
    if not isinstance(value, str):
        hint = " (quote it)" if isinstance(value, int | float) else ""
        raise ValueError(f"expected a string, got {shown(value, secret=secret)}{hint}")  # noqa: TRY004
    text = value.strip()
    if not text and not empty:
        raise ValueError("must not be empty")
    if CONTROL.search(text):
        raise ValueError("must not contain control characters or line breaks")
    if len(text) > limit:
        raise ValueError(f"must be at most {limit} characters long")
    return text


def text(*, limit: int = 4096, secret: bool = False, empty: bool = False) -> Check:
    return Check(
        lambda v: text_value(v, limit=limit, secret=secret, empty=empty),
        {"type": "string", "maxLength": limit} | ({} if empty else {"minLength": 1}),
        replace=True,
    )


def matching(pattern: str, message: str, *, limit: int = 4096, secret: bool = False) -> Check:
    """Text that fully matches ``pattern``; ``message`` (formatted with ``shown``) when it does not."""
    compiled = re.compile(pattern)

    def check(value: Any) -> str:
        found = text_value(value, limit=limit, secret=secret)
        if not compiled.fullmatch(found):
            raise ValueError(message.format(shown(found, secret=secret)))
        return found

    return Check(check, {"type": "string", "pattern": f"^{pattern}$"}, replace=True)


def duration(*, allow_zero: bool = False) -> Check:
    def check(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError:
            raise ValueError(f"expected a duration like 30s or 5m, got {shown(value)}") from None
        if seconds == 0 and not allow_zero:
            raise ValueError("must be longer than 0s")
        if seconds > MAX_DURATION:
            raise ValueError(f"must be at most {format_duration(MAX_DURATION)}, got {shown(value)}")
        return seconds

    seconds = {"type": "number", "minimum" if allow_zero else "exclusiveMinimum": 0, "maximum": MAX_DURATION}
    pattern = rf"^\s*(?=[0-9.])(?:{_DURATION.pattern})\s*$"
    schema = {"anyOf": [{"type": "string", "pattern": pattern}, seconds]}
    return Check(check, schema, replace=True, write=format_duration)


def one_of(options: Any) -> Check:
    """A choice among the values of the ``Literal`` type ``options``, in any case."""
    values = get_args(options)

    def check(value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in values:
            return value.strip().lower()
        raise ValueError(f"expected one of {', '.join(values)}, got {shown(value)}")

    return Check(check)


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
    raw = raw if "://" in raw else "https://" + raw
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


def _base_url(value: Any) -> str:
    if value is None:
        raise ValueError("required (or set FOUNDRY_HOSTNAME in the environment)")
    return normalize_base_url(text_value(value, secret=True))


def _http_url(value: Any) -> str:
    url = text_value(value, secret=True)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port = 0
        parts = urlsplit("http:")
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("expected an http:// or https:// URL")
    if not parts.hostname or not _valid_host(parts.hostname) or port == 0:
        raise ValueError("expected an http:// or https:// URL with a valid host and port")
    return url


def redacted_url(url: str, *, path_is_secret: bool) -> str:
    """``url`` without user info or query, and without its path when the path may be a credential."""
    parts = urlsplit(url)
    hidden = "@" in parts.netloc or bool(parts.query) or bool(parts.fragment)
    path = parts.path
    if path_is_secret and path not in ("", "/"):
        path, hidden = "", True
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{path}" + ("/" + MASK if hidden else "")


def _listen(value: Any) -> tuple[str, int]:
    if isinstance(value, list):  # unquoted, YAML reads [::]:9708 as a list
        raise ValueError('expected host:port; quote an IPv6 address, like listen: "[::]:9708"')  # noqa: TRY004
    listen = text_value(value)
    host, colon, port = listen.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not colon or not host:
        why = "expected host:port, like 0.0.0.0:9708 or [::]:9708"
    elif ":" in host and not bracketed:
        why = "write an IPv6 address in brackets, like [::]:9708"
    elif not _valid_host(host) or bracketed != (":" in host):
        why = "expected host:port, with a valid host name or address (IPv6 in brackets)"
    elif not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
        why = "the port must be a number from 0 to 65535"
    else:
        return host, int(port)
    raise ValueError(f"{why}, got {listen!r}")


def _write_listen(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _existing_file(value: Any) -> str:
    path = text_value(value)
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    return path


def _rid(value: Any) -> str:
    rid = text_value(value)
    if not RID_PATTERN.match(rid):
        raise ValueError(
            f"does not match the RID pattern ri.<service>.<instance>.<type>.<locator> (got {rid!r})"
        )
    # Interned so that snapshots, which intern what they decode, share this one copy.
    return sys.intern(rid)


def _label_name(name: Any) -> str:
    if not isinstance(name, str) or not re.fullmatch(_LABEL_NAME, name):
        raise ValueError(f"not a valid Prometheus label name: {shown(name)} (must match {_LABEL_NAME})")
    if name.startswith("__"):
        raise ValueError("label names starting with __ are reserved by Prometheus")
    if name in RESERVED_LABELS:
        raise ValueError("reserved: the monitor (or Prometheus) sets this label itself")
    return name


def _label_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        hint = " (quote it)" if isinstance(value, bool | float) else ""
        raise ValueError(f"expected a string, got {shown(value)}{hint}")  # noqa: TRY004
    if len(str(value)) > 1024:
        raise ValueError("must be at most 1024 characters long")
    return str(value)


def _unique_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    names = [name.lower() for name, _ in headers]
    if twice := [name for index, (name, _) in enumerate(headers) if names.index(name.lower()) < index]:
        raise Problems(*(((name,), "duplicate header (names are case-insensitive)") for name in twice))
    return headers


Text = Annotated[str, text()]
Name = Annotated[str, text(limit=200)]
Duration = Annotated[float, duration()]
DurationOrZero = Annotated[float, duration(allow_zero=True)]
Rid = Annotated[str, Check(_rid, {"type": "string", "pattern": RID_PATTERN.pattern.replace(r"\Z", "$")})]
ExistingFile = Annotated[str, Check(_existing_file, {"type": "string"})]
BaseUrl = Annotated[str, Check(_base_url, {"type": "string"})]
HttpUrl = Annotated[str, Check(_http_url, {"type": "string", "format": "uri"})]
WebhookUrl = Annotated[HttpUrl, Secret(lambda url: redacted_url(url, path_is_secret=True))]
AlertmanagerUrl = Annotated[HttpUrl, Secret(lambda url: redacted_url(url, path_is_secret=False))]
Listen = Annotated[tuple[str, int], Check(_listen, {"type": "string"}, replace=True, write=_write_listen)]
Token = Annotated[str, matching(r"\S+", "must not contain whitespace", secret=True), Secret()]
SecretText = Annotated[str, text(secret=True), Secret()]
LabelName = Annotated[str, Check(_label_name, {"type": "string", "pattern": f"^{_LABEL_NAME}$"})]
LabelValue = Annotated[str, Check(_label_value, {"type": ["string", "integer"]}, replace=True)]
Labels = Annotated[tuple[tuple[LabelName, LabelValue], ...], Pairs()]
HeaderName = Annotated[str, matching(_HEADER_NAME, "not a valid HTTP header name: {}")]
Headers = Annotated[
    tuple[tuple[HeaderName, Annotated[str, text(secret=True, empty=True), Secret()]], ...],
    Pairs(),
    AfterValidator(_unique_headers),
]
User = Annotated[
    str, matching(r"[^:\x00-\x1f\x7f]+", "user names must be non-empty strings without ':', got {}")
]
BcryptHash = Annotated[
    str,
    matching(
        _BCRYPT, "expected a bcrypt hash starting $2a$, $2b$ or $2y$ (htpasswd -nBC 12 USER)", secret=True
    ),
    Secret(),
]
Users = Annotated[tuple[tuple[User, BcryptHash], ...], Pairs()]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
BatchMode = Literal["auto", "off"]


def _batch_mode(value: Any) -> Any:
    # YAML reads a bare ``off`` as false (and ``on`` as true).
    if isinstance(value, bool):
        return "auto" if value else "off"
    return one_of(BatchMode).validate(value)


Batch = Annotated[BatchMode, Check(_batch_mode)]
