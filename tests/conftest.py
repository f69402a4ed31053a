"""Shared fixtures: for the Foundry client tests the API examples, a mocked HTTP layer, fake clock and sleep;
for the sinks an open in-memory outbox."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from monitor.state import MemoryState

#: Copies of the team's shared API examples, kept in the tree so that a clone needs nothing beside it.
API_EXAMPLES_DIR = Path(__file__).resolve().parent / "fixtures" / "api"

_NEEDS_STREAM_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters


class _SentWriter:
    """Stands in for the stream writer of a request that was already sent; aiohttp reads only this."""

    output_size = 0


class _MockedResponse(aiohttp.ClientResponse):
    """A response aioresponses can build on aiohttp 3.14, which added a required ``stream_writer``.

    aioresponses 0.7.9 does not pass it (pnuckowski/aioresponses#289); drop this once a release does.
    """

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        if _NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", _SentWriter())
        super().__init__(method, url, **kwargs)


class MockedHttp(aioresponses):
    """aioresponses whose canned responses work on every supported aiohttp, with request counting."""

    def add(self, url: Any, method: str = "GET", **kwargs: Any) -> None:  # type: ignore[override]
        kwargs.setdefault("response_class", _MockedResponse)
        super().add(url, method, **kwargs)

    def calls(self, method: str = "GET") -> list[Any]:
        """Every recorded call with ``method``, in order, whatever its URL."""
        return [call for (verb, _), calls in self.requests.items() if verb == method for call in calls]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """An ``anyio.sleep`` stand-in that returns at once and remembers every delay it was asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def rendered(exc: BaseException) -> str:
    """Everything an operator could see of an exception: str, repr and the traceback with its causes, and
    the repr of each exception in the chain a traceback shows (error reporters repr them)."""
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    link = _shown_next(exc)
    while link is not None and len(parts) < 50:
        parts.append(repr(link))
        link = _shown_next(link)
    return "\n".join(parts)


def _shown_next(exc: BaseException) -> BaseException | None:
    return exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


@pytest.fixture
def api_examples_dir() -> Path:
    """The directory of the example payloads (copies of the shared ones, in the tree)."""
    assert API_EXAMPLES_DIR.is_dir(), f"API examples not found at {API_EXAMPLES_DIR}"
    return API_EXAMPLES_DIR


@pytest.fixture
def mocked_http() -> Iterator[MockedHttp]:
    """Every aiohttp request in the test is answered by the canned responses added to this."""
    mock = MockedHttp()
    with mock:
        yield mock


@pytest.fixture
async def mocked_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session for use with ``mocked_http`` (it never opens a socket), closed afterwards."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recording_sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
async def outbox() -> AsyncIterator[MemoryState]:
    """An open in-memory outbox (the memory backend of the port the SQLite file implements)."""
    state = MemoryState()
    await state.open()
    yield state
    await state.close()


# The session's PostgreSQL server and a fresh database per test (tests/pg.py).
from tests.pg import pg_database, pg_server  # noqa: E402, F401
