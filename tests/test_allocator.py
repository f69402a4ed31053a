"""Tests for monitor.allocator: free C heap memory given back to the system, and no harm without glibc."""

from __future__ import annotations

import sys

import pytest

from monitor.allocator import glibc, release_free_memory


class FakeLibc:
    def __init__(self) -> None:
        self.pads: list[int] = []

    def malloc_trim(self, pad: int) -> int:
        self.pads.append(pad)
        return 1


def test_release_trims_every_heap_with_no_padding() -> None:
    """The release asks glibc to return all free pages (``malloc_trim(0)``) and says it did."""
    libc = FakeLibc()
    assert release_free_memory(lambda: libc)
    assert libc.pads == [0]


def test_without_glibc_nothing_is_done() -> None:
    """On a C library without ``malloc_trim`` (musl, macOS) the release is a no-op that says so."""
    assert not release_free_memory(lambda: None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_the_real_release_runs_here() -> None:
    """On this glibc system the C library is found and the release runs."""
    assert glibc() is not None
    assert release_free_memory()
