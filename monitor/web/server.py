"""The listener: serves the endpoints' application over TCP, with optional TLS, until cancelled."""

from __future__ import annotations

import logging
import ssl

import anyio
import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from anyio.abc import TaskStatus

log = structlog.get_logger(__name__)


class BadRequestFilter(logging.Filter):
    """Turns aiohttp's report of a malformed request into one ``http_bad_request`` line.

    aiohttp logs a request it cannot parse (or a body it cannot decode while discarding it) as an error
    with a traceback whose message quotes the client's bytes (a 64 KB header, say); what an operator needs
    is that it happened, the status and the peer.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError | web.RequestPayloadError):
            return True
        # aiohttp's message is "Error handling request from %s" with the peer's address.
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
        log.log(
            # Non-HTTP bytes as the first request (a scanner, TLS on the plain port) are debug for aiohttp.
            min(record.levelno, logging.WARNING),
            "http_bad_request",
            status=(error.code if isinstance(error, HttpProcessingError) else 0) or 400,
            peer=peer if isinstance(peer, str) else None,
        )
        return False


#: What aiohttp's request handlers of this server log goes here, through the filter above.
_requests_log = logging.getLogger("monitor.web.requests")
_requests_log.addFilter(BadRequestFilter())


def server_ssl_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext | None:
    if cert_file is None or key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


async def serve_http(
    app: web.Application,
    *,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until cancelled; reports the bound port (``port`` 0 picks one) once listening."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, logger=_requests_log)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host=host, port=port, ssl_context=ssl_context, reuse_address=True)
        await site.start()
        bound = int(runner.addresses[0][1]) if runner.addresses else port
        log.info("http_listening", host=host, port=bound, tls=ssl_context is not None)
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.move_on_after(5, shield=True):
            await runner.cleanup()
