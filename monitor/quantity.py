"""Kubernetes-style memory quantities (``256Mi``, ``1.5GiB``, ``2G``, ``1048576``) parsed to bytes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"k": 1, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([KMGTPE]i|[kKMGTPE])?B?\s*$")
#: Anything larger is not a memory size a deployment can have; refusing it bounds the arithmetic.
_MAX_BYTES = 1 << 70


def parse_memory(text: str) -> int | None:
    """Return the number of bytes ``text`` names, or None when it is not a quantity we know.

    Foundry shows ``256MiB`` and ``1GiB``; Kubernetes writes ``256Mi``. Both are accepted, as are the
    decimal suffixes (``k M G T P E``), plain byte counts and decimals such as ``1.5Gi``. Fractions of a
    byte are rounded down.
    """
    if len(text) > 64:
        return None
    match = _QUANTITY.match(text)
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
        return None
    if suffix in _BINARY:
        value *= 1024 ** _BINARY[suffix]
    elif suffix in _DECIMAL:
        value *= 1000 ** _DECIMAL[suffix]
    result = int(value)
    return result if result <= _MAX_BYTES else None
