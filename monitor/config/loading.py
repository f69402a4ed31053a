"""Reading a configuration: a hardened YAML loader, ``${VAR}`` interpolation, and problems by key path.

Validation never stops at the first problem: every problem is named by its key path
(``deployments[2].rid: ...``) and all of them are raised together in one ``ConfigError``. Problem texts
come from the field types' own checks, never from pydantic's messages, which may quote the input.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Mapping
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError
from yaml.constructor import ConstructorError

from monitor.config.fields import PLAIN_KEY, Problems, kind, shown
from monitor.config.model import Config

_MAX_FILE_BYTES = 16 << 20
#: Bounds the work of walking a hostile document (YAML aliases can make a small file a huge tree).
_MAX_NODES = 1_000_000
_MAX_DEPTH = 32
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_KINDS: Final = {
    "missing": "required",
    **dict.fromkeys(("model_type", "model_attributes_type", "dict_type"), "expected a mapping, got {kind}"),
    "tuple_type": "expected a list, got {kind}",
    **dict.fromkeys(
        ("int_type", "int_parsing", "int_from_float", "int_parsing_size"),
        "expected a whole number, got {shown}",
    ),
    **dict.fromkeys(("float_type", "float_parsing", "finite_number"), "expected a number, got {shown}"),
    **dict.fromkeys(("bool_type", "bool_parsing"), "expected true or false, got {shown}"),
}
_RANGES: Final = frozenset({"greater_than", "greater_than_equal", "less_than_equal"})

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` names every problem found, each by its key path."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__(problems)
        self.problems = tuple(problems)

    def __str__(self) -> str:
        count = len(self.problems)
        head = f"{count} configuration problem{'' if count == 1 else 's'}:"
        return "\n  ".join((head, *self.problems))


class _Unresolved:
    """Stands in for a string whose ``${VAR}`` could not be resolved; its problem is already reported."""


def _path(loc: Loc) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif PLAIN_KEY.fullmatch(part):
            path = f"{path}.{part}" if path else part
        else:
            path += f"[{part!r}]"
    return path


class _Interpolation:
    """Replaces ``${VAR}`` references in every string of the raw data, noting those that fail."""

    def __init__(self, environ: Mapping[str, str], source: str) -> None:
        self.environ = environ
        self.source = source
        self.problems: list[str] = []
        self.failed: list[Loc] = []
        self._nodes = 0

    def fail(self, loc: Loc, message: str) -> _Unresolved:
        self.problems.append(f"{_path(loc)}: {message}")
        self.failed.append(loc)
        return _Unresolved()

    def resolve(self, value: Any, loc: Loc = ()) -> Any:
        self._nodes += 1
        if self._nodes > _MAX_NODES:
            raise ConfigError((f"{self.source}: too large (more than {_MAX_NODES} values)",))
        if len(loc) > _MAX_DEPTH:
            return self.fail(loc, "nested too deeply")
        if isinstance(value, str):
            return self._interpolate(value, loc) if "${" in value else value
        if isinstance(value, dict):
            return {k: self.resolve(v, (*loc, k) if isinstance(k, str) else loc) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(item, (*loc, index)) for index, item in enumerate(value)]
        return value

    def _interpolate(self, text: str, loc: Loc) -> str | _Unresolved:
        problems: list[str] = []

        def replace(match: re.Match[str]) -> str:
            variable = None if match.group(1) is None else _VARIABLE.fullmatch(match.group(1))
            if match.group(0) == "$${":
                return "${"
            if variable is None:
                problems.append(
                    "malformed reference: expected ${NAME} or ${NAME:-default} (write $${ for a literal ${)"
                )
                return ""
            name, default = variable.groups()
            value = self.environ.get(name)
            # As in the shell, ``:-`` also replaces a variable that is set but empty.
            if value or (default is None and value is not None):
                return str(value)
            if default is None:
                problems.append(f"environment variable {name} is not set (and no ${{{name}:-default}})")
            return default or ""

        out = _REFERENCE.sub(replace, text)
        for message in problems:
            self.fail(loc, message)
        return _Unresolved() if problems else out


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The model whose fields are the keys at ``loc``."""
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, str) and model is not None:
            found = model.model_fields.get(part)
            model = None if found is None else _inner_model(found.annotation)
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_inner_model, typing.get_args(annotation))), None)


def _range(loc: Loc, value: Any) -> str:
    """The allowed range of the number at ``loc``, as its field declares it."""
    field = (_model_at(loc[:-1]) or Config).model_fields[str(loc[-1])]
    bounds = {k: _figure(getattr(m, k)) for m in field.metadata for k in ("gt", "ge", "le") if hasattr(m, k)}
    low = f"more than {bounds['gt']} and at most" if "gt" in bounds else f"between {bounds['ge']} and"
    return f"must be {low} {bounds['le']}, got {_figure(value)}"


def _figure(number: Any) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def _problems(exc: ValidationError, failed: list[Loc], source: str) -> list[str]:
    problems: list[str] = []
    for error in exc.errors(include_url=False):
        loc: Loc = tuple(error["loc"])
        if error["type"] == "default_factory_not_called" or any(loc[: len(bad)] == bad for bad in failed):
            continue  # a default that follows a bad value, or a variable that could not be resolved
        if loc[-1:] == ("[key]",):
            # A bad key: named in the path when it can be written there, else in the message.
            key = loc[-2]
            loc = loc[:-1] if isinstance(key, str) and PLAIN_KEY.fullmatch(key) else loc[:-2]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, Problems):
            problems.extend(
                f"{_path((*loc, *where)) or source}: {message}" for where, message in cause.problems
            )
            continue
        if error["type"] == "extra_forbidden":
            allowed = sorted((_model_at(loc[:-1]) or Config).model_fields)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(allowed)}"
            message = f"unknown key ({hint})"
        elif cause is not None:
            message = str(cause)
        elif error["type"] in _RANGES:
            message = _range(loc, error.get("input"))
        else:
            value = error.get("input")  # shown only for numbers and flags, never for a string setting
            message = _KINDS.get(error["type"], "invalid ({kind})").format(
                kind=kind(value), shown=shown(value)
            )
        problems.append(f"{_path(loc) or source}: {message}")
    return problems


def parse_config(
    data: object, *, environ: Mapping[str, str] | None = None, source: str = "<config>"
) -> Config:
    """Validate already-parsed YAML data into a ``Config``; raises ``ConfigError`` naming every problem."""
    if not isinstance(data, dict):
        got = "an empty document" if data is None else kind(data)
        raise ConfigError((f"{source}: expected a mapping at the top level, got {got}",))
    environ = os.environ if environ is None else environ
    interpolation = _Interpolation(environ, source)
    resolved = interpolation.resolve(data)
    try:
        config = Config.model_validate(resolved, context={"environ": environ})
    except ValidationError as exc:
        problems = interpolation.problems + _problems(exc, interpolation.failed, source)
        raise ConfigError(tuple(problems)) from None
    config._source = source
    return config


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
