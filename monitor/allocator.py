"""Allocator tuning for a long-running process: glibc returns freed memory instead of hoarding it."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Protocol

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks of this size or more get their own mapping, returned to the system when freed. Fixed, so glibc's
#: dynamic threshold cannot climb (to 32 MiB) after the first large free and let later batches of events
#: (100-500 KB of JSON) strand memory in the heap. /metrics chunks stay below it (see exposition).
MMAP_THRESHOLD = 128 * 1024
#: Free memory at the top of the heap beyond this is given back to the system.
TRIM_THRESHOLD = 128 * 1024


class Libc(Protocol):
    def mallopt(self, param: int, value: int) -> int: ...


def _glibc() -> Libc | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def tune_allocator(load: Callable[[], Libc | None] = _glibc) -> bool:
    """Fix glibc's mmap and trim thresholds; False (and nothing done) on a C library without ``mallopt``.

    Measured on a 2,000-deployment fleet changing every few seconds: RSS crept 6.5 MB in 3.5 minutes with
    glibc's defaults (all of it given back by ``malloc_trim``: free memory held, not live data), and stayed
    flat with these settings.
    """
    libc = load()
    if libc is None:
        return False
    # mallopt answers 1 on success, 0 on a value it refuses.
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(mmap_set) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
