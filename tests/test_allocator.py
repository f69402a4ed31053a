"""Tests for monitor.allocator: glibc's thresholds are fixed where glibc is, and nothing breaks elsewhere."""

from __future__ import annotations

import platform

import pytest

from monitor.allocator import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD,
    TRIM_THRESHOLD,
    _glibc,
    tune_allocator,
)


class FakeLibc:
    """Records mallopt calls; answers ``result``."""

    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


def test_both_thresholds_are_fixed() -> None:
    """The mmap threshold (which also stops glibc's dynamic raising of it) and the trim threshold are set."""
    libc = FakeLibc()
    assert tune_allocator(lambda: libc)
    assert libc.calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)]


def test_a_refused_setting_is_reported() -> None:
    """mallopt answering 0 makes tune_allocator answer False."""
    assert not tune_allocator(lambda: FakeLibc(result=0))


def test_without_glibc_nothing_is_done() -> None:
    """On a C library without mallopt (musl, macOS) the call is a no-op that says so."""
    assert not tune_allocator(lambda: None)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_real_glibc_takes_the_settings() -> None:
    """On this glibc system the real mallopt accepts both settings."""
    assert _glibc() is not None
    assert tune_allocator()
