import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from llmloop.serve.app import create_app
from llmloop.serve.config import ServerConfig
from tests.serve.fakes import FakeEngine


def wait_until_ready(client: TestClient, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "the app never became ready"
        time.sleep(0.01)


@pytest.fixture
def make_client(tmp_path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(engine=None, guardrails=None, retrieval=None, metrics=None, **ServerConfig
    fields)`` → a ready TestClient on a fake engine, logging to a fresh SQLite file, safety off
    unless asked for (``guardrails``: e.g. ``fakes.keyword_guardrails()``; ``retrieval``: a
    ``FakeRetrieval``; ``metrics``: the ``ServerMetrics`` those were given, for the app's own)."""
    clients: list[TestClient] = []

    def make(
        engine: FakeEngine | None = None, *, guardrails=None, retrieval=None, metrics=None, **config
    ) -> TestClient:
        engine = engine or FakeEngine()
        config = {"safety": False, "db_url": f"sqlite:///{tmp_path}/log-{len(clients)}.db"} | config

        async def factory():
            return engine

        app = create_app(
            ServerConfig(**config),
            factory,
            guardrails=guardrails,
            retrieval=retrieval,
            metrics=metrics,
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        wait_until_ready(client)
        client.engine = engine
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
        if not client.app.state.owns_guardrails:
            client.app.state.guardrails.close()


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()
