"""Tests for monitor.quantity.parse_memory: binary and decimal suffixes, decimals, junk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.quantity import parse_memory

KI = 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1Ki", KI),
        ("1KiB", KI),
        ("256Mi", 256 * KI**2),
        ("256MiB", 256 * KI**2),
        ("1Gi", KI**3),
        ("1GiB", KI**3),
        ("2Ti", 2 * KI**4),
        ("2TiB", 2 * KI**4),
        ("3Pi", 3 * KI**5),
        ("3PiB", 3 * KI**5),
        ("1Ei", KI**6),
        ("1k", 1000),
        ("1K", 1000),
        ("1kB", 1000),
        ("5M", 5 * 10**6),
        ("5MB", 5 * 10**6),
        ("2G", 2 * 10**9),
        ("2GB", 2 * 10**9),
        ("7T", 7 * 10**12),
        ("7P", 7 * 10**15),
        ("1E", 10**18),
        ("0", 0),
        ("1048576", 1048576),
        ("1048576B", 1048576),
        ("1.5Gi", 1610612736),
        ("1.5GiB", 1610612736),
        ("0.5Ki", 512),
        (".5Ki", 512),
        ("1.5", 1),
        ("1.9999", 1),
        ("2.5G", 2_500_000_000),
        (" 256Mi ", 256 * KI**2),
        ("256 Mi", 256 * KI**2),
        ("1024Ei", 1 << 70),
    ],
)
def test_known_quantities_parse_to_bytes(text: str, expected: int) -> None:
    """Binary (Ki..Ei) and decimal (k..E) suffixes, optional B, decimals rounded down to whole bytes."""
    assert parse_memory(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "B",
        "Mi",
        "lots",
        "256 MB of RAM",
        "-1Gi",
        "+1Gi",
        "1e9",
        "1,5Gi",
        "1.Gi",
        "1..5Gi",
        "0x10",
        "1gi",
        "1mi",
        "1m",
        "1Zi",
        "1iB",
        "1KiBB",
        "1Gi 2Gi",
        "١٢٣",
        "1025Ei",
        "9" * 65,
        "1" + " " * 70,
    ],
)
def test_junk_is_none(text: str) -> None:
    """Anything that is not a quantity we know, too long, negative or over 2**70 bytes gives None."""
    assert parse_memory(text) is None


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_any_text_gives_none_or_a_bounded_byte_count(text: str) -> None:
    """parse_memory never raises, and what it returns is a whole number of bytes in [0, 2**70]."""
    result = parse_memory(text)
    assert result is None or (isinstance(result, int) and 0 <= result <= 1 << 70)


@settings(max_examples=200)
@given(st.integers(0, 10**6), st.sampled_from([("Ki", 1), ("Mi", 2), ("Gi", 3), ("Ti", 4)]), st.booleans())
def test_whole_binary_quantities_scale_by_powers_of_1024(
    number: int, suffix: tuple[str, int], b: bool
) -> None:
    """``<n><X>i[B]`` is exactly n * 1024**k, the same with and without the trailing B."""
    unit, power = suffix
    assert parse_memory(f"{number}{unit}{'B' if b else ''}") == number * 1024**power
