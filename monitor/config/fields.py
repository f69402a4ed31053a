"""The configuration's field types: how a value is read, bounded, written out, masked and described."""

from __future__ import annotations

import functools
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NoReturn, TypeVar, get_args
from urllib.parse import urlsplit

import pydantic
from annotated_types import GroupedMetadata
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, PlainSerializer, StringConstraints
from pydantic_core import PydanticCustomError, Url, core_schema

from monitor.model import RID_PATTERN

#: What a secret is replaced with in masked output.
MASK: Final = "***"
#: Labels the monitor puts on its own series (or Prometheus on every target); static labels may not use them.
RESERVED_LABELS: Final = frozenset(
    {"rid", "deployment", "state", "from_state", "to_state", "field", "error", "model_rid"}
    | {"model_version_rid", "branch", "gpu_type", "le", "quantile", "job", "instance"}
    | {"alertname", "severity", "source"}  # set on the alerts the Alertmanager sink pushes
)
#: The longest duration any setting takes: longer ones are typos, and would overflow some event loops' timers.
MAX_DURATION: Final = 30 * 86400.0
#: What is wrong with a text that does not match its field's pattern, by the pattern pydantic reports.
PATTERN_PROBLEMS: dict[str, str] = {}
_NUM = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
#: A bare number of seconds, or each unit at most once from the largest to the smallest.
_DURATION = re.compile(rf"({_NUM})|" + "".join(rf"(?:({_NUM}){u})?" for u in ("d", "h", "m", "s", "ms")))
_UNITS: Final = (86400.0, 3600.0, 60.0, 1.0)
_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
#: A host as ``pydantic_core.Url`` leaves it (lower case, IDNA encoded): a DNS name, or an address.
_HOST = re.compile(rf"(?=.{{1,253}}$){_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?|\[[0-9a-f:.]+\]")
_KINDS: Final[dict[type, str]] = {type(None): "null", bool: "a boolean", int: "a number", float: "a number"}
_KINDS.update({str: "a string", list: "a list", dict: "a mapping"})
_PRINTABLE, _CONTROL = r"[^\x00-\x1f\x7f]*", "must not contain control characters or line breaks"
_URL: Final = "expected an http:// or https:// URL with a valid host and port"
After, Before, Schema = pydantic.AfterValidator, pydantic.BeforeValidator, pydantic.WithJsonSchema


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``, ``1m30s`` (largest unit first) or a bare number.
    Raises ``ValueError`` for anything else, including negative, infinite and NaN values."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if not (any(match.groups()) if match else type(text) in (int, float)):
        fail("expected a duration like 30s or 5m, units from d to ms, each once")
    bare, *units, milliseconds = match.groups() if match else (text, None, None, None, None, None)
    try:
        total = sum(float(count) * unit for count, unit in zip(units, _UNITS, strict=True) if count)
        # Dividing by 1000 is exact where multiplying by 0.001 is not: 500ms is exactly 0.5.
        seconds = float(bare) if bare is not None else total + float(milliseconds or 0) / 1000
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        fail("a duration must be a finite, non-negative length of time")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest text ``parse_duration`` reads back as exactly ``seconds`` (``90.0`` -> ``1m30s``)."""
    if not math.isfinite(seconds) or seconds < 0:
        fail("a duration must be a finite, non-negative length of time")
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


def check(*problems: tuple[bool, tuple[str | int, ...], str]) -> None:
    """Raise the problems whose condition holds, each at its key path."""
    if found := [(where, message) for wrong, where, message in problems if wrong]:
        raise Problems(*found)


def fail(message: str) -> NoReturn:
    """Raise the problem ``message``, whose text never repeats a secret or a URL: a check as an expression."""
    raise ValueError(message)


def kind(value: Any) -> str:
    """What ``value`` is, for a message that must not show the value itself."""
    return _KINDS.get(type(value), "a value")


def shown(value: Any) -> str:
    """``value`` for a problem message: its repr when it is a plain scalar, else its kind."""
    text = repr(value) if type(value) in (str, int, float) else kind(value)
    return text if len(text) <= 80 else text[:76] + "...'"


class Grouped(tuple[Any, ...], GroupedMetadata):
    """Several pieces of ``Annotated`` metadata as one, for a factory to return."""


class Secret(PlainSerializer):
    """Marks a secret: redacted when serialised with context ``{"mask": True}``, and ``writeOnly``."""

    def __get_pydantic_json_schema__(self, schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return {**handler(schema), "writeOnly": True}


def secret(redact: Callable[[str], str] = lambda _: MASK) -> Secret:
    """A ``Secret`` written out as ``redact`` makes it when masking: ``***`` unless a URL shows its host."""
    return Secret(lambda value, info: redact(value) if (info.context or {}).get("mask") else value)


class Pairs:
    """Annotated metadata: ``tuple[tuple[K, V], ...]`` read and written as a mapping of K to V."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        key, value = (handler.generate_schema(arg) for arg in get_args(get_args(source)[0]))
        mapping = core_schema.dict_schema(key, value)
        write = core_schema.wrap_serializer_function_ser_schema(lambda p, w: w(dict(p)), schema=mapping)
        return core_schema.no_info_after_validator_function(
            lambda m: (*m.items(),), mapping, serialization=write
        )


def text(pattern: str = _PRINTABLE, problem: str = _CONTROL, limit: int = 4096, empty: bool = False) -> Any:
    """A string, stripped, of at most ``limit`` characters, fully matching ``pattern`` (else ``problem``).
    The loader finds ``problem`` by the pattern pydantic reports, so a pattern has one problem text."""
    anchored = f"^(?:{pattern})$"
    PATTERN_PROBLEMS[anchored] = problem
    return StringConstraints(strip_whitespace=True, min_length=1 - empty, max_length=limit, pattern=anchored)


def _refused(types: tuple[type, ...], error: str, value: Any) -> Any:
    """``value``, unless of ``types`` (pydantic's error type ``error``): YAML's ``true`` is not a number."""
    if isinstance(value, types):
        raise PydanticCustomError(error, "wrong type")
    return value


def _duration(*, zero: bool) -> Grouped:
    """A length of time up to ``MAX_DURATION``, read by ``parse_duration``, written by ``format_duration``."""

    def read(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError:
            fail(f"expected a duration like 30s or 5m, got {shown(value)}")
        if seconds > MAX_DURATION or (seconds == 0 and not zero):
            low = "at least" if zero else "longer than"
            fail(f"must be {low} 0s and at most {format_duration(MAX_DURATION)}, got {shown(value)}")
        return seconds

    seconds = {"type": "number", "minimum" if zero else "exclusiveMinimum": 0, "maximum": MAX_DURATION}
    pattern = {"type": "string", "pattern": rf"^\s*(?=[0-9.])(?:{_DURATION.pattern})\s*$"}
    write = PlainSerializer(format_duration, when_used="json")
    return Grouped((Before(read), write, Schema({"anyOf": [pattern, seconds]})))


def _url(text: str, problem: str) -> Url:
    """``text`` parsed, with a host name or address and a port other than 0 (else ``problem``)."""
    try:
        url, written = Url(text), urlsplit(text).hostname
    except ValueError:
        fail(problem)
    return url if written and _HOST.fullmatch(url.host or "") and url.port != 0 else fail(problem)


def normalize_base_url(text: str) -> str:
    """``scheme://host[:port]`` from a URL or a bare host name: ``https://`` unless ``http://`` is written.
    Raises ``ValueError`` with a message that does not repeat the text (it could hold credentials)."""
    url = _url(text.strip() if "://" in text else "https://" + text.strip(), "has an invalid host or port")
    if url.scheme not in ("http", "https"):
        fail("expected https://host[:port] or a host name (http:// only when written out)")
    if url.username is not None or url.password is not None:
        fail("must not contain credentials")
    if url.path != "/" or url.query is not None or url.fragment is not None:
        fail("must be just scheme://host[:port], without a path (the monitor adds /api/v2/...)")
    return str(url).removesuffix("/")


def _http_url(text: str) -> str:
    return text if _url(text, _URL).scheme in ("http", "https") else fail(_URL)


def redacted_url(url: str, *, path_is_secret: bool) -> str:
    """``url`` without user info or query, and without its path when the path may be a credential."""
    parts = urlsplit(url)
    path = parts.path if not path_is_secret or parts.path in ("", "/") else ""
    hidden = path != parts.path or "@" in parts.netloc or bool(parts.query or parts.fragment)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{path}" + ("/" + MASK if hidden else "")


def _listen(value: Any) -> tuple[str, int]:
    if isinstance(value, list):  # unquoted, YAML reads [::]:9708 as a list
        fail('expected host:port; quote an IPv6 address, like listen: "[::]:9708"')
    host, colon, port = str(value).strip().rpartition(":")
    if ":" in host and not host.startswith("["):
        fail(f"write an IPv6 address in brackets, like [::]:9708, got {shown(value)}")
    if not colon or not host:
        fail(f"expected host:port, like 0.0.0.0:9708 or [::]:9708, got {shown(value)}")
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        fail(f"the port must be a number from 0 to 65535, got {shown(value)}")
    problem = f"expected host:port, with a valid host name or address (IPv6 in brackets), got {shown(value)}"
    url = _url(f"http://{host}", problem)
    if str(url) != f"http://{url.host}/":  # the host held a path, query or user name
        fail(problem)
    return str(url.host).strip("[]"), int(port)


def _unique_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    names = [name.lower() for name, _ in headers]
    twice = [name for index, (name, _) in enumerate(headers) if names.index(name.lower()) < index]
    check(*((True, (name,), "duplicate header (names are case-insensitive)") for name in twice))
    return headers


def _base_url(value: Any, info: pydantic.ValidationInfo) -> Any:
    """A base URL left out is FOUNDRY_HOSTNAME's, as for the SDK."""
    host = (info.context or {}).get("environ", {}).get("FOUNDRY_HOSTNAME", "").strip()
    if value is None and not host:
        fail("required (or set FOUNDRY_HOSTNAME in the environment)")
    try:
        return normalize_base_url(host) if value is None else value
    except ValueError as exc:
        fail(f"from FOUNDRY_HOSTNAME: {exc}")


_RID = RID_PATTERN.pattern.removeprefix("^").removesuffix(r"\Z")
_LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
_RESERVED = "reserved: the monitor (or Prometheus) sets this label itself"
_LABEL_VALUE = {"type": ["string", "integer"], "maxLength": 1024}
_BCRYPT = r"\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}"
_HASH = text(_BCRYPT, "expected a bcrypt hash starting $2a$, $2b$ or $2y$ (htpasswd -nBC 12 USER)")
_RID_TEXT = text(_RID, "does not match the RID pattern ri.<service>.<instance>.<type>.<locator>")
_Choice = TypeVar("_Choice")
#: A choice (a Literal or an enum) written in any case.
Lower = Annotated[_Choice, Before(lambda value: value.strip().lower() if isinstance(value, str) else value)]
Int = Annotated[int, Before(functools.partial(_refused, (bool, float), "int_type"))]
Number = Annotated[float, Before(functools.partial(_refused, (bool,), "float_type"))]
Text = Annotated[str, text()]
Name = Annotated[str, text(limit=200), After(sys.intern)]
Duration = Annotated[float, _duration(zero=False)]
DurationOrZero = Annotated[float, _duration(zero=True)]
# Interned so that snapshots, which intern what they decode, share this one copy.
Rid = Annotated[str, _RID_TEXT, After(sys.intern)]
_existing = After(lambda path: path if Path(path).is_file() else fail(f"no such file: {path!r}"))
ExistingFile = Annotated[str, text(), _existing]
BaseUrl = Annotated[str, Before(_base_url), text(), After(normalize_base_url)]
HttpUrl = Annotated[str, text(), After(_http_url), Schema({"type": "string", "format": "uri"})]
WebhookUrl = Annotated[HttpUrl, secret(lambda url: redacted_url(url, path_is_secret=True))]
AlertmanagerUrl = Annotated[HttpUrl, secret(lambda url: redacted_url(url, path_is_secret=False))]
_host_port = PlainSerializer(lambda a: (f"[{a[0]}]" if ":" in a[0] else a[0]) + f":{a[1]}", when_used="json")
Listen = Annotated[tuple[str, int], Before(_listen), _host_port, Schema({"type": "string"})]
_TOKEN = text(r"[^\s\x00-\x1f\x7f]+", "must not contain whitespace or control characters")
Token = Annotated[str, _TOKEN, secret()]
SecretText = Annotated[str, text(), secret()]
# Not starting with __, which Prometheus reserves.
_UNDUNDERED = r"[a-zA-Z][a-zA-Z0-9_]*|_(?:[a-zA-Z0-9][a-zA-Z0-9_]*)?"
_LABEL_TEXT = text(_UNDUNDERED, f"not a valid Prometheus label name (must match {_LABEL}, not start with __)")
_unreserved = After(lambda name: fail(_RESERVED) if name in RESERVED_LABELS else name)
_LabelName = Annotated[str, _LABEL_TEXT, _unreserved]
_int_as_text = Before(lambda v: str(v) if type(v) is int else v)
_LabelValue = Annotated[str, _int_as_text, StringConstraints(max_length=1024), Schema(_LABEL_VALUE)]
Labels = Annotated[tuple[tuple[_LabelName, _LabelValue], ...], Pairs()]
_HeaderName = Annotated[str, text(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", "not a valid HTTP header name")]
_HeaderValue = Annotated[str, text(empty=True), secret()]
Headers = Annotated[tuple[tuple[_HeaderName, _HeaderValue], ...], Pairs(), After(_unique_headers)]
_User = Annotated[str, text(r"[^:\x00-\x1f\x7f]+", "user names must be non-empty strings without ':'")]
Users = Annotated[tuple[tuple[_User, Annotated[str, _HASH, secret()]], ...], Pairs()]
LogLevel = Lower[Literal["debug", "info", "warning", "error"]]
LogFormat = Lower[Literal["auto", "json", "console"]]
# YAML reads a bare ``off`` as false (and ``on`` as true).
_on_off = Before(lambda value: ("auto" if value else "off") if isinstance(value, bool) else value)
Batch = Annotated[Lower[Literal["auto", "off"]], _on_off]
