"""The error tree of the Foundry client, documented in one place.

Every way a request to Foundry can end other than with a decoded answer is one class here. aiohttp and
timeout errors are translated into this tree at the network boundary (``monitor.client``) with
``raise ... from``, so callers never see a library exception.

::

    FoundryError                      base; ``kind`` is a short, bounded label for metrics
    ├── InvalidRid                    the RID fails the SDK's pattern; nothing was sent
    ├── TransportError                no HTTP answer at all                       (retried, upstream fault)
    │   ├── ConnectionFailed          refused, reset, DNS, TLS handshake
    │   └── RequestTimeout            connect, socket-read or total timeout
    ├── ApiError                      an HTTP error status, with the error envelope when there was one
    │   ├── InvalidArgument           400                                          (never retried)
    │   │   ├── UnsupportedLiveDeployment   400 UnsupportedLiveDeployment
    │   │   ├── UnsupportedModelSource      400 UnsupportedModelSource: a model's versions cannot be listed
    │   │   └── PreviewRequired             400 ApiFeaturePreviewUsageOnly
    │   ├── Unauthorized              401 (OAuth2: refresh and retry exactly once)
    │   ├── PermissionDenied          403                                          (never retried)
    │   ├── LiveDeploymentNotFound    404 with an envelope: a state, not a failure (never retried)
    │   ├── ModelNotFound             404 ModelNotFound, and any 404 envelope of a model's version list
    │   ├── ApiNotFound               404 without an envelope: wrong base URL     (never retried)
    │   ├── RateLimited               429                                          (retried, Retry-After)
    │   ├── Unavailable               503                                          (retried, Retry-After)
    │   └── ServerError               other 5xx; 502 and 504 are retried
    └── BadResponse                   a 2xx answer that cannot be used
        ├── NotJson                   HTML error page, truncated or otherwise non-JSON body
        ├── WrongShape                JSON, but not the answer asked for (missing or mistyped field, or a
        │                             version listing whose pages repeat or run past the caps)
        └── BodyTooLarge              body over the configured size cap

``UnsupportedModelSource`` and ``ModelNotFound`` are errors on a model, not on a deployment: their ``rid`` is
the model's RID, and they say nothing about the state of that model's deployments.

No message, ``repr`` or attribute of these classes carries request headers, tokens or response bodies:
messages are built from the status, the error name and the RID only.
"""

from __future__ import annotations

from typing import ClassVar


class FoundryError(Exception):
    """Base of every error the Foundry client raises."""

    kind: ClassVar[str] = "error"
    #: True when the upstream as a whole may be failing (feeds the circuit breaker).
    upstream_fault: ClassVar[bool] = False
    #: True when the same request may succeed if sent again after a backoff.
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, rid: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rid = rid

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidRid(FoundryError):
    """The RID does not match the SDK's RID pattern; no request was sent."""

    kind = "invalid_rid"


class TransportError(FoundryError):
    """No HTTP answer was received."""

    kind = "connection"
    upstream_fault = True
    retryable = True


class ConnectionFailed(TransportError):
    """The connection was refused, reset, or could not be set up."""

    kind = "connection"


class RequestTimeout(TransportError):
    """The connect, socket-read or total timeout expired."""

    kind = "timeout"


class ApiError(FoundryError):
    """Foundry answered with an error status."""

    kind = "http_error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        rid: str | None = None,
        error_code: str | None = None,
        error_name: str | None = None,
        error_instance_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, rid=rid)
        self.status = status
        self.error_code = error_code
        self.error_name = error_name
        self.error_instance_id = error_instance_id
        #: Seconds the server asked us to wait, already capped by the client.
        self.retry_after = retry_after


class InvalidArgument(ApiError):
    """400: a permanent problem with this request; report it and do not hammer."""

    kind = "invalid_argument"


class UnsupportedLiveDeployment(InvalidArgument):
    """400 UnsupportedLiveDeployment: this RID is not a deployment the API can describe."""

    kind = "unsupported"


class UnsupportedModelSource(InvalidArgument):
    """400 UnsupportedModelSource: a version of this model was made outside the public API."""

    kind = "unsupported_model_source"


class PreviewRequired(InvalidArgument):
    """400 ApiFeaturePreviewUsageOnly: the endpoint was called without ``preview=true``."""

    kind = "preview_required"


class Unauthorized(ApiError):
    """401: the token is missing, expired or revoked."""

    kind = "unauthorized"


class PermissionDenied(ApiError):
    """403: the token may not read this deployment."""

    kind = "permission_denied"


class LiveDeploymentNotFound(ApiError):
    """404 LiveDeploymentNotFound: the deployment is gone or never existed."""

    kind = "not_found"


class ModelNotFound(ApiError):
    """404 ModelNotFound: the model is gone or never existed; not a state of its deployments."""

    kind = "model_not_found"


class ApiNotFound(ApiError):
    """404 with no error envelope: the API is missing on that host (wrong base URL)."""

    kind = "api_not_found"


class RateLimited(ApiError):
    """429: over the rate limit."""

    kind = "rate_limited"
    retryable = True


class Unavailable(ApiError):
    """503: the service is unavailable."""

    kind = "unavailable"
    upstream_fault = True
    retryable = True


class ServerError(ApiError):
    """Any other 5xx; 502 and 504 are retried, 500 is reported at once."""

    kind = "server_error"
    upstream_fault = True

    @property
    def is_gateway_error(self) -> bool:
        return self.status in (502, 504)


class BadResponse(FoundryError):
    """A success status with a body that cannot be used."""

    kind = "bad_response"


class NotJson(BadResponse):
    """The body is not JSON: an HTML error page, a truncated body, or other bytes."""

    kind = "not_json"


class WrongShape(BadResponse):
    """The body is JSON but not the expected object; ``path`` names the offending field."""

    kind = "wrong_shape"

    def __init__(self, message: str, *, path: str = "", rid: str | None = None) -> None:
        super().__init__(message, rid=rid)
        self.path = path


class BodyTooLarge(BadResponse):
    """The body is larger than the configured cap; it was not read to the end."""

    kind = "too_large"


#: Every ``kind`` a poll can fail with: the bounded label set of the poll error metrics.
ERROR_KINDS: tuple[str, ...] = tuple(
    sorted(
        {
            cls.kind
            for cls in (
                InvalidRid,
                ConnectionFailed,
                RequestTimeout,
                ApiError,
                InvalidArgument,
                UnsupportedLiveDeployment,
                UnsupportedModelSource,
                PreviewRequired,
                Unauthorized,
                PermissionDenied,
                LiveDeploymentNotFound,
                ModelNotFound,
                ApiNotFound,
                RateLimited,
                Unavailable,
                ServerError,
                NotJson,
                WrongShape,
                BodyTooLarge,
            )
        }
    )
)
