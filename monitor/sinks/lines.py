"""Events as JSON lines, and their writing from a worker thread: the format of the stream and file sinks."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio

from monitor.events import Event


def event_line(event: Event) -> str:
    return json.dumps(event.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n"


async def write_lines(write: Callable[[str], None], text: str) -> None:
    """``write(text)`` in a worker thread, so the event loop never waits on a terminal, pipe or disk."""
    # The thread finishes the write even when the task is cancelled; shielding lets the caller see that it
    # did, instead of writing the batch a second time while draining.
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(write, text)
