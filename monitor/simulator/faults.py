"""Fault injection for the simulator (per deployment, model, fleet or token endpoint), and its tokens.

A ``Fault`` says what goes wrong with an answer; a ``FaultRegistry`` holds at most one fault per target and
hands it out to the requests it applies to, counting down ``count`` when set. Targets are a live deployment
RID (its GET), a model RID (its list and version-list requests), ``FLEET`` (every API request without a
fault of its own) and ``TOKEN_ENDPOINT`` (the OAuth2 token endpoint, which fleet-wide faults leave alone).

Kinds, each optionally preceded by ``delay`` seconds of silence:

==================  ==============================================================================
``status``          an HTTP error status with the Foundry error envelope (or an empty body with
                    ``empty``), ``Retry-After`` when ``retry_after`` is set
``delay``           the normal answer, ``delay`` seconds late
``hang``            no answer until the client gives up or the simulator stops
``reset``           the connection is reset (TCP RST) without an answer
``html``            a proxy's HTML error page (status 502 unless ``status`` says otherwise)
``cut``             the headers of a 200 announce the whole body; half is sent, then the connection closes
``truncate``        a well-framed 200 whose JSON body is cut in half
``wrong_shape``     valid JSON that is not a LiveDeployment (``shape``: ``missing_status``,
                    ``missing_runtime``, ``wrong_types``, ``not_object``); in a version page each
                    version loses its ``createdTime``, or has a number there (``wrong_types``)
``unknown_state``   the payload with ``status.state`` set to ``state`` (``HIBERNATING`` by default)
``huge``            the payload padded with an unknown field to at least ``size`` bytes
==================  ==============================================================================

``status``, ``hang``, ``reset``, ``html`` and ``delay`` strike before authentication, as a proxy or an
overloaded server would; the others only change a successful answer, and are not used up by requests that
fail for another reason.

``TokenStore`` checks bearer tokens: static tokens, and OAuth2 tokens it issues with a lifetime. Expired,
revoked and unknown tokens are told apart so that tests can tell why a request was refused.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import math
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

__all__ = [
    "BODY_KINDS",
    "FLEET",
    "TOKEN_ENDPOINT",
    "Fault",
    "FaultKind",
    "FaultRegistry",
    "IssuedToken",
    "TokenCheck",
    "TokenStore",
    "WrongShape",
    "default_error",
    "error_envelope",
]

FLEET: Final = "fleet"
TOKEN_ENDPOINT: Final = "token"  # noqa: S105 - a fault target, not a credential

FaultKind = Literal[
    "status", "delay", "hang", "reset", "html", "cut", "truncate", "wrong_shape", "unknown_state", "huge"
]
WrongShape = Literal["missing_status", "missing_runtime", "wrong_types", "not_object"]
#: Kinds that change a successful answer (the rest strike before the request is looked at).
BODY_KINDS: Final = frozenset({"cut", "truncate", "wrong_shape", "unknown_state", "huge"})

#: errorCode and errorName sent for a status when the fault names none.
_DEFAULT_ERRORS: Final[Mapping[int, tuple[str, str]]] = {
    400: ("INVALID_ARGUMENT", "UnsupportedLiveDeployment"),
    401: ("UNAUTHORIZED", "Default:Unauthorized"),
    403: ("PERMISSION_DENIED", "ApiUsageDenied"),
    404: ("NOT_FOUND", "LiveDeploymentNotFound"),
    409: ("CONFLICT", "Default:Conflict"),
    429: ("CUSTOM_CLIENT", "TooManyRequests"),
    500: ("INTERNAL", "Default:Internal"),
    502: ("CUSTOM_SERVER", "BadGateway"),
    503: ("CUSTOM_SERVER", "ServiceUnavailable"),
    504: ("TIMEOUT", "Default:Timeout"),
}


def default_error(status: int) -> tuple[str, str]:
    """The (errorCode, errorName) Foundry would send with ``status``."""
    known = _DEFAULT_ERRORS.get(status)
    if known is not None:
        return known
    return (
        ("INTERNAL", "Default:Internal") if status >= 500 else ("INVALID_ARGUMENT", "Default:InvalidArgument")
    )


def error_envelope(error_code: str, error_name: str, parameters: Mapping[str, Any] | None = None) -> bytes:
    """A Foundry error body, with a fresh ``errorInstanceId``."""
    return json.dumps(
        {
            "errorCode": error_code,
            "errorName": error_name,
            "errorInstanceId": str(uuid.uuid4()),
            "parameters": dict(parameters or {}),
        },
        separators=(",", ":"),
    ).encode()


@dataclass(frozen=True, slots=True)
class Fault:
    """What goes wrong with an answer; see the module docstring for the kinds.

    ``count`` limits the fault to the next N requests it applies to (None: until cleared);
    ``probability`` makes it strike only that share of them, drawn from the registry's seeded generator.
    """

    kind: FaultKind
    status: int | None = None
    error_code: str | None = None
    error_name: str | None = None
    empty: bool = False
    retry_after: str | None = None
    delay: float = 0.0
    size: int = 5_000_000
    state: str = "HIBERNATING"
    shape: WrongShape = "missing_status"
    count: int | None = None
    probability: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind == "status" and self.status is None:
            raise ValueError("a status fault needs a status")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("status must be between 400 and 599")
        if not math.isfinite(self.delay) or self.delay < 0:
            raise ValueError("delay must be a finite number >= 0")
        if self.size < 0:
            raise ValueError("size must be >= 0")
        if self.shape not in get_args(WrongShape):
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be >= 1 (or absent)")
        if not 0.0 < self.probability <= 1.0:
            raise ValueError("probability must be in (0, 1]")

    @property
    def changes_body(self) -> bool:
        return self.kind in BODY_KINDS

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """A fault from the control API's JSON (the field names above; ``retry_after`` may be a number).

        ``TypeError`` for a value of the wrong type, ``ValueError`` for anything else that is wrong.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(unknown)}")
        values = dict(data)
        retry_after = values.get("retry_after")
        if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
            values["retry_after"] = f"{retry_after:g}"
        expected: dict[str, tuple[type, ...]] = {
            "kind": (str,),
            "status": (int,),
            "error_code": (str,),
            "error_name": (str,),
            "empty": (bool,),
            "retry_after": (str,),
            "delay": (int, float),
            "size": (int,),
            "state": (str,),
            "shape": (str,),
            "count": (int,),
            "probability": (int, float),
        }
        for name, value in values.items():
            if value is None and name != "kind":
                continue
            allowed = expected[name]
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise TypeError(f"fault field {name} has the wrong type")
        if "kind" not in values:
            raise ValueError("a fault needs a kind")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class _Slot:
    fault: Fault
    remaining: int | None


class FaultRegistry:
    """The faults in force, at most one per target; safe to change between any two requests."""

    def __init__(self, *, seed: int = 0) -> None:
        self._slots: dict[str, _Slot] = {}
        self._rng = random.Random(f"faults-{seed}")
        #: How many answers each fault kind has spoiled.
        self.applied: Counter[str] = Counter()

    def __bool__(self) -> bool:
        return bool(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def set(self, fault: Fault, target: str = FLEET) -> None:
        """Put ``fault`` on ``target`` (a deployment or model RID, ``FLEET`` or ``TOKEN_ENDPOINT``)."""
        self._slots[target] = _Slot(fault=fault, remaining=fault.count)

    def clear(self, target: str | None = None) -> bool:
        """Remove the fault on ``target``, or every fault when None; True if something was removed."""
        if target is None:
            had = bool(self._slots)
            self._slots.clear()
            return had
        return self._slots.pop(target, None) is not None

    def get(self, target: str) -> Fault | None:
        """The fault on ``target`` with ``count`` set to what is left of it, without using it."""
        slot = self._slots.get(target)
        if slot is None:
            return None
        return dataclasses.replace(slot.fault, count=slot.remaining)

    def active(self) -> dict[str, Fault]:
        """Every fault in force, by target, with what is left of each ``count``."""
        return {target: fault for target in self._slots if (fault := self.get(target)) is not None}

    def take(self, targets: Iterable[str], *, body: bool) -> Fault | None:
        """The fault that strikes this request, used up by one; ``body`` picks the stage asked about.

        The first target that has a fault decides: a deployment's own fault hides the fleet's.
        """
        for target in targets:
            slot = self._slots.get(target)
            if slot is None:
                continue
            fault = slot.fault
            if fault.changes_body != body:
                return None
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                return None
            if slot.remaining is not None:
                slot.remaining -= 1
                if slot.remaining <= 0:
                    del self._slots[target]
            self.applied[fault.kind] += 1
            return fault
        return None


TokenCheck = Literal["ok", "missing", "unknown", "expired", "revoked"]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An OAuth2 access token as the token endpoint hands it out."""

    access_token: str = dataclasses.field(repr=False)
    expires_in: float


class TokenStore:
    """Accepted bearer tokens: the static ones, and OAuth2 tokens issued to known clients."""

    _PRUNE_AT: Final = 10_000

    def __init__(
        self,
        static: Iterable[str] = (),
        clients: Mapping[str, str] | None = None,
        *,
        ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not math.isfinite(ttl) or ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        self._static = set(static)
        self._clients = dict(clients or {})
        self.ttl = ttl
        self._clock = clock
        self._issued: dict[str, float] = {}
        self._revoked: set[str] = set()

    def __repr__(self) -> str:
        counts = f"static={len(self._static)}, clients={len(self._clients)}, issued={len(self._issued)}"
        return f"TokenStore({counts})"

    def add_static(self, token: str) -> None:
        self._static.add(token)
        self._revoked.discard(token)

    def issue(self, client_id: str, client_secret: str) -> IssuedToken | None:
        """A new token for a known client with the right secret; None for bad credentials."""
        expected = self._clients.get(client_id)
        # Compared even for an unknown client, so that timing does not tell which client ids exist.
        valid = hmac.compare_digest(
            (expected if expected is not None else "\0").encode(), client_secret.encode()
        )
        if expected is None or not valid:
            return None
        if len(self._issued) >= self._PRUNE_AT:
            self._prune()
        token = "sim-" + secrets.token_urlsafe(24)
        self._issued[token] = self._clock() + self.ttl
        return IssuedToken(access_token=token, expires_in=self.ttl)

    def _prune(self) -> None:
        now = self._clock()
        for token, expires_at in list(self._issued.items()):
            if expires_at <= now:
                del self._issued[token]

    def check(self, token: str | None) -> TokenCheck:
        if not token:
            return "missing"
        if token in self._revoked:
            return "revoked"
        if token in self._static:
            return "ok"
        expires_at = self._issued.get(token)
        if expires_at is None:
            return "unknown"
        return "ok" if self._clock() < expires_at else "expired"

    def revoke(self, token: str) -> bool:
        """Refuse ``token`` from now on; True if it was a token this store knew."""
        known = token in self._static or token in self._issued
        if known:
            self._revoked.add(token)
        return known

    def revoke_all(self) -> int:
        """Revoke every static and issued token; return how many."""
        known = self._static | set(self._issued)
        self._revoked |= known
        return len(known)

    def expire(self, token: str | None = None) -> int:
        """Make an issued token (every one when None) expired now; return how many."""
        now = self._clock()
        targets = [token] if token is not None else list(self._issued)
        count = 0
        for item in targets:
            if item in self._issued:
                self._issued[item] = min(self._issued[item], now)
                count += 1
        return count
