"""The monitor's own HTTP server: the endpoints, who may call them, and the listener."""

from __future__ import annotations

from monitor.web.access import BasicAuth, FailureLimiter
from monitor.web.endpoints import Endpoints
from monitor.web.server import serve_http, server_ssl_context

__all__ = ["BasicAuth", "Endpoints", "FailureLimiter", "serve_http", "server_ssl_context"]
