"""Decoding of API bodies into snapshots and versions: tolerant of new fields and states, strict on types.

Any body, however hostile, ends either in the value asked for (a ``LiveDeployment``, a list of them, or a
page of ``ModelVersion``) or in a ``BadResponse`` subclass (``NotJson`` or ``WrongShape``); nothing else
escapes. Environment variable values are reduced to keyed digests here and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NoReturn

from monitor.errors import NotJson, WrongShape
from monitor.model import (
    Delay,
    Gpu,
    LiveDeployment,
    ModelVersion,
    ModelVersionSource,
    RuntimeConfiguration,
    ScalingConfiguration,
    is_valid_rid,
)
from monitor.quantity import parse_memory

#: Bounds the work a hostile body can cause: no more list items or variables than this.
_MAX_ITEMS = 10_000
#: A page token is sent back in the next URL: one longer than this is not a token but an attack on it.
MAX_PAGE_TOKEN_LENGTH = 2048
#: RFC 3339 ``date-time``: full date, full time, fraction optional, offset required.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,12})?(?:([Zz])|([+-])(\d{2}):(\d{2}))\Z",
    re.ASCII,
)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_json(body: bytes | str) -> Any:
    """``json.loads`` that refuses NaN and Infinity and turns every failure into ``NotJson``."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise NotJson(f"body is not JSON ({type(exc).__name__})") from None


def _fail(path: str, expected: str) -> NoReturn:
    raise WrongShape(f"field {path!r} is missing or not {expected}", path=path)


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        _fail(path, "an object")
    return value


def _string(obj: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        _fail(f"{path}{key}", "a string")
    # Interned: states, branches, model RIDs and units repeat across a fleet, and a deployment's RID is the
    # configured one; one copy each instead of one per snapshot (interned strings are freed when unused).
    return sys.intern(value)


def _int(obj: Mapping[str, Any], key: str, path: str, *, required: bool = True) -> int | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    # bool is an int subclass; `true` is not a replica count.
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{path}{key}", "an integer")
    return value


def _number(obj: Mapping[str, Any], key: str, path: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"{path}{key}", "a number")
    try:
        number = float(value)
    except OverflowError:
        _fail(f"{path}{key}", "a finite number")
    if not math.isfinite(number):
        _fail(f"{path}{key}", "a finite number")
    return number


def parse_rfc3339(text: str) -> float | None:
    """The Unix timestamp of an RFC 3339 ``date-time`` (a leap second counts as the next second); None when
    ``text`` is not one."""
    match = _RFC3339.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, zulu, sign, offset_hours, offset_minutes = match.groups()[6:]
    try:
        offset = timedelta(0) if zulu else timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
        zone = UTC if zulu else timezone(-offset if sign == "-" else offset)
        leap = second == 60
        moment = datetime(year, month, day, hour, minute, 59 if leap else second, tzinfo=zone)
        seconds = moment.timestamp()
    except (ValueError, OverflowError):  # 31 April, hour 24, an offset of a day, past year 9999 in UTC
        return None
    return seconds + float(leap) + (float(fraction) if fraction else 0.0)


def _delay(obj: Mapping[str, Any], key: str, path: str) -> Delay | None:
    raw = obj.get(key)
    if raw is None:
        return None
    here = f"{path}{key}."
    delay = _object(raw, f"{path}{key}")
    return Delay(value=_int(delay, "value", here) or 0, unit=_string(delay, "unit", here) or "")


class Decoder:
    """Turns API bodies into snapshots; holds the key that environment variable digests are made with.

    The key keeps digests from being reversed by guessing low-entropy values; it must stay the same for
    as long as snapshots are compared (the process, or the state file that outlives it).
    """

    __slots__ = ("_key",)

    def __init__(self, digest_key: bytes) -> None:
        self._key = digest_key

    def digest(self, value: str) -> str:
        """A short keyed digest of a secret value: equal values, equal digests; nothing else learnt."""
        mac = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return "hmac-sha256:" + mac.hexdigest()[:16]

    def live_deployment(self, body: bytes | str, *, expected_rid: str | None = None) -> LiveDeployment:
        """Decode a get-endpoint body. With ``expected_rid``, an answer about another RID is rejected."""
        snapshot = self.from_object(parse_json(body))
        if expected_rid is not None and snapshot.rid != expected_rid:
            raise WrongShape("answer names a different deployment than the one asked for", path="rid")
        return snapshot

    def live_deployment_list(self, body: bytes | str) -> tuple[LiveDeployment, ...]:
        """Decode a list-endpoint body ``{"data": [...]}``."""
        top = _object(parse_json(body), "$")
        items = top.get("data")
        if not isinstance(items, list) or len(items) > _MAX_ITEMS:
            _fail("data", "a list")
        snapshots = []
        for index, item in enumerate(items):
            try:
                snapshots.append(self.from_object(item))
            except WrongShape as exc:
                raise WrongShape(f"data[{index}]: {exc.message}", path=f"data[{index}].{exc.path}") from None
        return tuple(snapshots)

    def model_version_page(self, body: bytes | str) -> tuple[tuple[ModelVersion, ...], str | None]:
        """Decode one page of a version listing: its versions, and the token of the next page (None: last)."""
        top = _object(parse_json(body), "$")
        items = top.get("data")
        if not isinstance(items, list) or len(items) > _MAX_ITEMS:
            _fail("data", "a list")
        token = top.get("nextPageToken")
        # An empty token sent back reads as "the first page" and would loop; a huge one would bloat the URL.
        if token is not None and (not isinstance(token, str) or not 0 < len(token) <= MAX_PAGE_TOKEN_LENGTH):
            _fail("nextPageToken", f"a string of 1 to {MAX_PAGE_TOKEN_LENGTH} characters")
        versions = []
        for index, item in enumerate(items):
            try:
                versions.append(self._model_version(item))
            except WrongShape as exc:
                raise WrongShape(f"data[{index}]: {exc.message}", path=f"data[{index}].{exc.path}") from None
        return tuple(versions), token

    @staticmethod
    def _model_version(value: Any) -> ModelVersion:
        top = _object(value, "$")
        rid = _string(top, "rid", "") or ""
        if not is_valid_rid(rid):
            _fail("rid", "a RID")
        created = parse_rfc3339(_string(top, "createdTime", "") or "")
        if created is None:
            _fail("createdTime", "an RFC 3339 date-time")
        source = None
        raw = top.get("source")
        if raw is not None:
            obj = _object(raw, "source")
            source = ModelVersionSource(
                type=_string(obj, "type", "source.") or "",
                branch=_string(obj, "branch", "source.", required=False),
                repository_rid=_string(obj, "repositoryRid", "source.", required=False),
            )
        return ModelVersion(rid=rid, created_time=created, source=source)

    def from_object(self, value: Any) -> LiveDeployment:
        """Decode an already-parsed JSON value."""
        top = _object(value, "$")
        version = _object(top.get("modelVersion"), "modelVersion")
        status = _object(top.get("status"), "status")
        ready = status.get("isReady")
        if not isinstance(ready, bool):
            _fail("status.isReady", "a boolean")
        return LiveDeployment(
            rid=_string(top, "rid", "") or "",
            model_rid=_string(version, "modelRid", "modelVersion.") or "",
            model_version_rid=_string(version, "modelVersionRid", "modelVersion.") or "",
            branch=_string(top, "branch", "", required=False),
            runtime=self._runtime(_object(top.get("runtimeConfiguration"), "runtimeConfiguration")),
            state=_string(status, "state", "status.") or "",
            is_ready=ready,
        )

    def _runtime(self, obj: Mapping[str, Any]) -> RuntimeConfiguration:
        path = "runtimeConfiguration."
        memory = _string(obj, "memory", path, required=False)
        return RuntimeConfiguration(
            min_replicas=_int(obj, "minReplicas", path) or 0,
            max_replicas=_int(obj, "maxReplicas", path) or 0,
            cpu=_number(obj, "cpu", path),
            memory=memory,
            memory_bytes=None if memory is None else parse_memory(memory),
            gpu=self._gpu(obj.get("gpu")),
            thread_count=_int(obj, "threadCount", path, required=False),
            scaling=self._scaling(obj.get("scalingConfiguration")),
            sources=self._sources(obj.get("sources")),
            environment=self._environment(obj.get("environmentVariables")),
        )

    @staticmethod
    def _gpu(raw: Any) -> Gpu | None:
        if raw is None:
            return None
        path = "runtimeConfiguration.gpu."
        gpu = _object(raw, path[:-1])
        return Gpu(count=_int(gpu, "count", path) or 0, type=_string(gpu, "type", path, required=False))

    @staticmethod
    def _scaling(raw: Any) -> ScalingConfiguration | None:
        if raw is None:
            return None
        path = "runtimeConfiguration.scalingConfiguration."
        scaling = _object(raw, path[:-1])
        return ScalingConfiguration(
            scale_up_load_threshold=_number(scaling, "scaleUpLoadThreshold", path),
            scale_up_delay=_delay(scaling, "scaleUpDelay", path),
            scale_down_delay=_delay(scaling, "scaleDownDelay", path),
        )

    @staticmethod
    def _sources(raw: Any) -> tuple[str, ...] | None:
        if raw is None:
            return None
        if not isinstance(raw, list) or len(raw) > _MAX_ITEMS or not all(isinstance(s, str) for s in raw):
            _fail("runtimeConfiguration.sources", "a list of strings")
        return tuple(sorted(map(sys.intern, raw)))

    def _environment(self, raw: Any) -> tuple[tuple[str, str], ...] | None:
        if raw is None:
            return None
        path = "runtimeConfiguration.environmentVariables"
        if not isinstance(raw, dict) or len(raw) > _MAX_ITEMS:
            _fail(path, "an object")
        pairs = []
        for name, value in raw.items():
            if not isinstance(value, str):
                # The name is safe to show; the value never is.
                _fail(f"{path}.{name}", "a string")
            pairs.append((sys.intern(name), sys.intern(self.digest(value))))
        pairs.sort()
        return tuple(pairs)
