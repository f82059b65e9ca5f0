"""Fixtures for the evals tests: an in-process fake OpenAI server (see fake_server.py)."""

from collections.abc import Iterator

import pytest

from tests.evals.fake_server import FakeServerState, RunningServer, serve_fake


@pytest.fixture
def fake_server() -> Iterator[RunningServer]:
    with serve_fake(FakeServerState()) as server:
        yield server
