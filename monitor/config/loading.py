"""Reading a configuration: a hardened YAML loader, ``${VAR}`` interpolation, every problem by key path."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import re
import typing
from collections.abc import Mapping
from typing import Any, Final

import yaml
from pydantic import ValidationError
from yaml.constructor import ConstructorError

from monitor.config.fields import PATTERN_PROBLEMS, Problems, kind, shown
from monitor.config.model import Config, fields_of

_MAX_FILE_BYTES = 16 << 20
#: Bounds the work of walking a hostile document (YAML aliases can make a small file a huge tree).
_MAX_NODES = 1_000_000
_MAX_DEPTH = 32
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
#: ``$${``, or ``${NAME}`` or ``${NAME:-default}``; a ``${`` without a name is malformed.
_REFERENCE = re.compile(r"\$\$\{|\$\{(?:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})?")
_MALFORMED = "malformed reference: expected ${NAME} or ${NAME:-default} (write $${ for a literal ${)"
#: Pydantic's error types in our words (its messages may quote the input); ``{shown}`` only where no string
#: is taken, so never a secret.
_WORDS: Final = {
    ("missing",): "required",
    ("model_type", "model_attributes_type", "dict_type"): "expected a mapping, got {kind}",
    ("tuple_type",): "expected a list, got {kind}",
    ("int_type", "int_parsing", "int_parsing_size"): "expected a whole number, got {shown}",
    ("float_type", "float_parsing", "finite_number"): "expected a number, got {shown}",
    ("bool_type", "bool_parsing"): "expected true or false, got {shown}",
    ("literal_error", "enum"): "expected one of {expected}, got {shown}",
    ("string_type",): "expected a string, got {kind}",
    ("string_too_short",): "must not be empty",
    ("string_too_long",): "must be at most {max_length} characters long",
    ("invalid_key",): "keys must be strings, got {shown}",
}
_MESSAGES: Final = {error: words for errors, words in _WORDS.items() for error in errors}

#: Stands in for a value whose ``${VAR}`` could not be resolved: its problem is already reported.
_UNRESOLVED: Final = object()

Loc = tuple[str | int, ...]


@dataclasses.dataclass(eq=False)
class ConfigError(Exception):
    """The configuration is unusable; ``problems`` names every problem found, each by its key path."""

    problems: tuple[str, ...]

    def __str__(self) -> str:
        count = len(self.problems)
        return "\n  ".join((f"{count} configuration problem{'' if count == 1 else 's'}:", *self.problems))


def _path(loc: Loc) -> str:
    parts = (f".{p}" if isinstance(p, str) and _PLAIN_KEY.fullmatch(p) else f"[{p!r}]" for p in loc)
    return "".join(parts).removeprefix(".")


def _interpolated(data: Any, environ: Mapping[str, str], source: str) -> tuple[Any, list[tuple[Loc, str]]]:
    """``data`` with ``${VAR}`` references replaced, and the problems of those that failed."""
    failed: list[tuple[Loc, str]] = []
    nodes = itertools.count()

    def replace(match: re.Match[str], loc: Loc) -> str:
        name, default = match.groups()
        if match.group(0) == "$${":
            return "${"
        if name is None:
            failed.append((loc, _MALFORMED))
            return ""
        value = environ.get(name)
        # As in the shell, ``:-`` also replaces a variable that is set but empty.
        if value or (default is None and value is not None):
            return str(value)
        if default is None:
            failed.append((loc, f"environment variable {name} is not set (and no ${{{name}:-default}})"))
        return default or ""

    def resolve(value: Any, loc: Loc) -> Any:
        if next(nodes) >= _MAX_NODES:
            raise ConfigError((f"{source}: too large (more than {_MAX_NODES} values)",))
        if len(loc) > _MAX_DEPTH:
            failed.append((loc, "nested too deeply"))
            return _UNRESOLVED
        if isinstance(value, str) and "${" in value:
            count = len(failed)
            text = _REFERENCE.sub(lambda match: replace(match, loc), value)
            return text if len(failed) == count else _UNRESOLVED
        if isinstance(value, dict):
            return {k: resolve(v, (*loc, k) if isinstance(k, str) else loc) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(item, (*loc, index)) for index, item in enumerate(value)]
        return value

    return resolve(data, ()), failed


def _model_at(loc: Loc) -> type[Any]:
    """The section whose fields are the keys at ``loc``."""
    model: type[Any] = Config
    for part in loc:
        field = fields_of(model).get(part) if isinstance(part, str) else None
        stack = [] if field is None else [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and hasattr(annotation, "__pydantic_fields__"):
                model = annotation
                break
            stack.extend(typing.get_args(annotation))
    return model


def _figure(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


def _message(error: Any, loc: Loc) -> str:
    """What is wrong, in the project's words, for one of pydantic's errors at ``loc``."""
    ctx, value = error.get("ctx") or {}, error.get("input")
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = sorted(fields_of(_model_at(loc[:-1])))
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(allowed)}"
        return f"unknown key ({hint})"
    if "error" in ctx:
        return str(ctx["error"])
    if error["type"] in ("greater_than", "greater_than_equal", "less_than_equal"):
        field = fields_of(_model_at(loc[:-1]))[str(loc[-1])]
        bounds = {
            k: _figure(getattr(m, k)) for m in field.metadata for k in ("gt", "ge", "le") if hasattr(m, k)
        }
        low = f"more than {bounds['gt']} and at most" if "gt" in bounds else f"between {bounds['ge']} and"
        return f"must be {low} {bounds['le']}, got {shown(value)}"
    if error["type"] == "string_pattern_mismatch":
        return PATTERN_PROBLEMS[ctx["pattern"]]
    words = _MESSAGES.get(error["type"], "invalid ({kind})").format(
        kind=kind(value), shown=shown(value), **ctx
    )
    return words + " (quote it)" * (error["type"] == "string_type" and isinstance(value, int | float))


def parse_config(
    data: object, *, environ: Mapping[str, str] | None = None, source: str = "<config>"
) -> Config:
    """Validate already-parsed YAML data into a ``Config``; raises ``ConfigError`` naming every problem."""
    if not isinstance(data, dict):
        got = "an empty document" if data is None else kind(data)
        raise ConfigError((f"{source}: expected a mapping at the top level, got {got}",))
    environ = os.environ if environ is None else environ
    resolved, failed = _interpolated(data, environ, source)
    try:
        config = Config.model_validate(resolved, context={"environ": environ})
    except ValidationError as exc:
        problems = [f"{_path(loc)}: {message}" for loc, message in failed]
        for error in exc.errors(include_url=False):
            loc: Loc = tuple(error["loc"])
            if error["type"] == "default_factory_not_called" or any(loc[: len(b)] == b for b, _ in failed):
                continue  # a default that follows a bad value, or a variable that could not be resolved
            named = ""  # a bad key: in the path when it can be written there, else in the message
            if loc[-1:] == ("[key]",):
                plain = not isinstance(loc[-2], str) or _PLAIN_KEY.fullmatch(loc[-2])
                loc, named = (loc[:-1], "") if plain else (loc[:-2], f", got {shown(loc[-2])}")
            cause = (error.get("ctx") or {}).get("error")
            found = cause.problems if isinstance(cause, Problems) else [((), _message(error, loc))]
            problems += [f"{_path((*loc, *where)) or source}: {message}{named}" for where, message in found]
        raise ConfigError(tuple(problems)) from None
    config._source = source
    return config


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys, which PyYAML would silently resolve (last one wins)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key, _ in node.value:
            # Merge keys (<<) may be overridden on purpose; only keys written out are compared.
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if key.value in seen:
                    raise ConstructorError(None, None, f"found duplicate key {key.value!r}", key.start_mark)
                seen.add(key.value)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML file; every failure, an unreadable file included, is a ``ConfigError``."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as stream:
            raw = stream.read(_MAX_FILE_BYTES + 1)
        if len(raw) > _MAX_FILE_BYTES:
            raise ConfigError((f"{source}: larger than {_MAX_FILE_BYTES} bytes",))
        data = yaml.load(raw.decode("utf-8"), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except OSError as exc:
        problem = f"cannot be read ({exc.strerror or type(exc).__name__})"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except RecursionError:
        problem = "not valid YAML: nested too deeply"
    except yaml.MarkedYAMLError as exc:  # not str(exc): PyYAML quotes the line, which may hold a secret
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = f"not valid YAML: {exc.problem or exc.context or 'syntax error'}{where}"
    except yaml.YAMLError as exc:
        problem = f"not valid YAML ({type(exc).__name__})"
    else:
        return parse_config(data, environ=environ, source=source)
    raise ConfigError((f"{source}: {problem}",))
