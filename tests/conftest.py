"""Fixtures shared by every test: the anyio backend and the fake model over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.testing import FakeModel, FakeModelServer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeModelServer]:
    with FakeModelServer(FakeModel()) as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeModelServer) -> Iterator[FakeModel]:
    """The shared fake model, emptied for each test."""
    fake_server.fake.reset()
    yield fake_server.fake
    fake_server.fake.reset()
