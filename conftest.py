"""Runs every coroutine test and async fixture under anyio's pytest plugin on asyncio.

anyio's plugin runs a test and its async fixtures in one task, so a fixture may hold a task group open across
``yield`` (pytest-asyncio runs fixture set-up and tear-down in different tasks, which cancel scopes forbid).
Coroutine tests are marked as they are collected, before anyio's own hook looks at them, so that they use the
``anyio_backend`` fixture below: once each, on asyncio. Marked any later, anyio's plugin would copy each test
once per installed backend (trio comes with selenium) and drop its other parameters.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Module | pytest.Class, name: str, obj: Any) -> None:
    if collector.istestfunction(obj, name):
        inner = obj.hypothesis.inner_test if hasattr(obj, "hypothesis") else obj
        if inspect.iscoroutinefunction(inner):
            pytest.mark.anyio(obj)
