"""Tests for monitor.errors: the shape of the error tree, its flags and its bounded kind labels."""

from __future__ import annotations

import re

import pytest

from monitor import errors
from monitor.errors import (
    ERROR_KINDS,
    ApiError,
    ApiNotFound,
    BadResponse,
    BodyTooLarge,
    ConnectionFailed,
    FoundryError,
    InvalidArgument,
    InvalidRid,
    LiveDeploymentNotFound,
    ModelNotFound,
    NotJson,
    PermissionDenied,
    PreviewRequired,
    RateLimited,
    RequestTimeout,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
    UnsupportedLiveDeployment,
    UnsupportedModelSource,
    WrongShape,
)


def _tree_classes() -> list[type[FoundryError]]:
    found: list[type[FoundryError]] = []
    pending: list[type[FoundryError]] = [FoundryError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == errors.__name__:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (InvalidRid, FoundryError),
        (TransportError, FoundryError),
        (ConnectionFailed, TransportError),
        (RequestTimeout, TransportError),
        (ApiError, FoundryError),
        (InvalidArgument, ApiError),
        (UnsupportedLiveDeployment, InvalidArgument),
        (UnsupportedModelSource, InvalidArgument),
        (PreviewRequired, InvalidArgument),
        (Unauthorized, ApiError),
        (PermissionDenied, ApiError),
        (LiveDeploymentNotFound, ApiError),
        (ModelNotFound, ApiError),
        (ApiNotFound, ApiError),
        (RateLimited, ApiError),
        (Unavailable, ApiError),
        (ServerError, ApiError),
        (BadResponse, FoundryError),
        (NotJson, BadResponse),
        (WrongShape, BadResponse),
        (BodyTooLarge, BadResponse),
    ],
)
def test_every_class_sits_where_the_documented_tree_puts_it(
    cls: type[FoundryError], parent: type[FoundryError]
) -> None:
    """Each class's direct base is the one the module docstring's tree shows."""
    assert cls.__bases__ == (parent,)


def test_the_documented_tree_names_every_class() -> None:
    """A class added to errors.py without a line in the module docstring's tree is caught here."""
    lines = (errors.__doc__ or "").splitlines()
    documented = {line.split("── ")[1].split()[0] for line in lines if "── " in line}
    assert documented == {cls.__name__ for cls in _tree_classes()} - {"FoundryError"}


def test_error_kinds_cover_every_concrete_error_and_are_bounded_labels() -> None:
    """Every class a poll can fail with has its kind in ERROR_KINDS; kinds are short snake_case labels."""
    abstract = {FoundryError, BadResponse}
    for cls in _tree_classes():
        if cls not in abstract:
            assert cls.kind in ERROR_KINDS, cls.__name__
    assert list(ERROR_KINDS) == sorted(set(ERROR_KINDS))
    assert all(re.fullmatch(r"[a-z][a-z_]{1,30}", kind) for kind in ERROR_KINDS)


def test_kinds_tell_the_leaves_apart() -> None:
    """Apart from TransportError sharing its kind with ConnectionFailed, no two classes share a kind."""
    kinds = [cls.kind for cls in _tree_classes() if cls is not TransportError]
    assert len(kinds) == len(set(kinds))
    assert TransportError.kind == ConnectionFailed.kind == "connection"
    assert RequestTimeout.kind == "timeout"


@pytest.mark.parametrize(
    ("error", "retryable", "upstream_fault"),
    [
        (InvalidRid("x"), False, False),
        (ConnectionFailed("x"), True, True),
        (RequestTimeout("x"), True, True),
        (InvalidArgument("x", status=400), False, False),
        (UnsupportedLiveDeployment("x", status=400), False, False),
        (UnsupportedModelSource("x", status=400), False, False),
        (PreviewRequired("x", status=400), False, False),
        (Unauthorized("x", status=401), False, False),
        (PermissionDenied("x", status=403), False, False),
        (LiveDeploymentNotFound("x", status=404), False, False),
        (ModelNotFound("x", status=404), False, False),
        (ApiNotFound("x", status=404), False, False),
        (RateLimited("x", status=429), True, False),
        (Unavailable("x", status=503), True, True),
        (ServerError("x", status=500), False, True),
        (NotJson("x"), False, False),
        (WrongShape("x"), False, False),
        (BodyTooLarge("x"), False, False),
    ],
)
def test_retryable_and_upstream_fault_flags(
    error: FoundryError, retryable: bool, upstream_fault: bool
) -> None:
    """Only transport errors, 429 and 503 are retryable by class; 5xx and transport count as upstream faults."""
    assert error.retryable is retryable
    assert error.upstream_fault is upstream_fault


@pytest.mark.parametrize(
    ("status", "gateway"), [(500, False), (501, False), (502, True), (504, True), (599, False)]
)
def test_only_502_and_504_are_gateway_errors(status: int, gateway: bool) -> None:
    """ServerError.is_gateway_error picks out the statuses a proxy answers for a transient upstream."""
    assert ServerError("x", status=status).is_gateway_error is gateway


def test_api_error_keeps_its_envelope_fields() -> None:
    """The status, error code, name, instance id, RID and Retry-After are attributes, not message text."""
    error = RateLimited(
        "Foundry answered 429",
        status=429,
        rid="ri.a.b.c.d",
        error_code="code",
        error_name="name",
        error_instance_id="id",
        retry_after=3.0,
    )
    assert (error.status, error.rid, error.error_code, error.error_name) == (
        429,
        "ri.a.b.c.d",
        "code",
        "name",
    )
    assert (error.error_instance_id, error.retry_after, error.message) == ("id", 3.0, "Foundry answered 429")
    assert str(error) == "Foundry answered 429"


def test_repr_shows_class_and_message_only() -> None:
    """repr is ``Class('message')``: no attributes beyond the message are shown."""
    error = ApiNotFound("404 without an error envelope", status=404, rid="ri.a.b.c.d", error_code="secret?")
    assert repr(error) == "ApiNotFound('404 without an error envelope')"


def test_wrong_shape_names_the_offending_path() -> None:
    """WrongShape carries the path of the bad field, default empty."""
    assert WrongShape("bad", path="status.isReady").path == "status.isReady"
    assert WrongShape("bad").path == ""
    assert WrongShape("bad", rid="ri.a.b.c.d").rid == "ri.a.b.c.d"


def test_model_errors_are_not_deployment_errors() -> None:
    """ModelNotFound and UnsupportedModelSource are no kind of LiveDeploymentNotFound or
    UnsupportedLiveDeployment, so nothing that handles those takes a model's error for a deployment's."""
    for cls in (ModelNotFound, UnsupportedModelSource):
        assert not issubclass(cls, LiveDeploymentNotFound | UnsupportedLiveDeployment)
    assert {ModelNotFound.kind, UnsupportedModelSource.kind} == {"model_not_found", "unsupported_model_source"}
    assert {ModelNotFound.kind, UnsupportedModelSource.kind} <= set(ERROR_KINDS)
