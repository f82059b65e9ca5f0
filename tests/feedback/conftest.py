"""Fixtures for the request log: a fresh database per test on SQLite and on PostgreSQL (the
session's throwaway server, tests/postgres.py), and record factories."""

import time
from pathlib import Path

import pytest

from llmloop.feedback.record import CompletionRecord


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend; the same tests run against both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'llmloop.db'}"
    return request.getfixturevalue("postgres").create_database()


@pytest.fixture
def make_record():
    """``make_record(i, prompt=..., output=..., model=..., created=...)`` -> a CompletionRecord."""
    return build_record


def build_record(
    i: int,
    *,
    prompt: str = "What is the capital of France?",
    output: str | None = None,
    model: str = "smollm2-135m-instruct",
    created: float | None = None,
    endpoint: str = "chat.completions",
) -> CompletionRecord:
    chat = endpoint == "chat.completions"
    return CompletionRecord(
        id=f"{'chatcmpl' if chat else 'cmpl'}-{i:08d}",
        created=created if created is not None else time.time(),
        endpoint=endpoint,
        model=model,
        base_model="smollm2-135m-instruct",
        adapter=None if model == "smollm2-135m-instruct" else model,
        adapter_version=None if model == "smollm2-135m-instruct" else 1,
        messages=[{"role": "user", "content": prompt}] if chat else None,
        prompt=None if chat else prompt,
        citations=[],
        sampling_params={"temperature": 0.0, "max_tokens": 16},
        choices=[{"index": 0, "text": output or f"answer {i}", "finish_reason": "stop"}],
        prompt_tokens=9,
        completion_tokens=3,
        latency_s=0.05,
        api_key_id=None,
        user=None,
    )


@pytest.fixture
def make_app(tmp_path: Path):
    """``make_app(db_url, api_keys=())`` -> the server's real app (fake engine) with the feedback
    router and a RequestLog on ``db_url``; its store is on ``app.state.request_log.store``."""
    from llmloop.feedback.log import RequestLog
    from llmloop.serve.app import create_app
    from llmloop.serve.config import ServerConfig
    from llmloop.serve.routes.feedback import router
    from tests.serve.fakes import FakeEngine

    async def engine_factory():
        return FakeEngine()

    def make(db_url: str, api_keys: tuple[str, ...] = ()):
        app = create_app(ServerConfig(api_keys=api_keys, db_url=db_url), engine_factory)
        if "/v1/feedback" not in {getattr(r, "path", None) for r in app.routes}:
            app.include_router(router)
        if getattr(app.state, "request_log", None) is None:
            app.state.request_log = RequestLog(db_url, spool_dir=tmp_path / "spool")
            app.state.request_log.store.migrate()
        return app

    return make
