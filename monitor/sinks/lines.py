"""The writing of JSON lines from a worker thread, for the stream and file sinks (``Formatter.line`` makes
them)."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def write_lines(write: Callable[[str], None], text: str) -> None:
    """``write(text)`` in a worker thread, so the event loop never waits on a terminal, pipe or disk."""
    # The thread finishes the write even when the task is cancelled; shielding lets the caller see that it
    # did, instead of writing the batch a second time while draining.
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(write, text)
