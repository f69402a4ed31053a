"""Runs every coroutine test and async fixture under anyio's pytest plugin on asyncio.

anyio's plugin runs a test and its async fixtures in one task, so a fixture may hold a task group open across
``yield`` (pytest-asyncio runs fixture set-up and tear-down in different tasks, which cancel scopes forbid).
"""

from __future__ import annotations

import inspect

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.add_marker(pytest.mark.anyio)
