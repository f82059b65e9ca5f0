"""Routes on the real engine: a change applies within seconds, and no request fails while a
canary starts, is promoted and rolled back — adapters loading and unloading under streams."""

import concurrent.futures
import shutil
import threading
import time

import pytest

from llmloop import registry
from llmloop.feedback.db import create_db_engine
from llmloop.feedback.routes import Canary, RouteStore, Version
from llmloop.paths import adapters_dir, default_db_url

pytestmark = pytest.mark.engine

ROUTE = "rollout"


@pytest.fixture(scope="module")
def versions(test_lora_dir):
    """Two registered adapter versions (copies of the session's random LoRA)."""
    refs = []
    for n in (1, 2):
        path = adapters_dir() / f"rollout-v{n}"
        if not path.exists():
            shutil.copytree(test_lora_dir, path)
        artifact = registry.register(ROUTE, path, "adapter", base="smollm2-135m-instruct")
        refs.append(f"{artifact.name}@{artifact.version}")
    return refs


@pytest.fixture
def store():
    engine = create_db_engine(default_db_url())
    store = RouteStore(engine)
    store.migrate()
    if store.get(ROUTE) is not None:  # left by an interrupted run
        store.delete(ROUTE, actor="test")
    yield store
    if store.get(ROUTE) is not None:
        store.delete(ROUTE, actor="test")
    engine.dispose()


def _served(server, user: str, stream: bool = False) -> str:
    """The version that answered one short chat to the route (streamed to the end)."""
    messages = [{"role": "user", "content": "Count from one to twenty."}]
    if not stream:
        answer = server.client.chat.completions.create(
            model=ROUTE, messages=messages, max_tokens=8, user=user
        )
        return answer.model
    models, finish = set(), None
    for chunk in server.client.chat.completions.create(
        model=ROUTE,
        messages=messages,
        max_tokens=48,
        user=user,
        stream=True,
        extra_body={"ignore_eos": True},
    ):
        models.add(chunk.model)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert finish == "length", finish
    assert len(models) == 1, models  # one version for the whole stream
    return models.pop()


def _wait_until(predicate, timeout_s: float, stop: threading.Event | None = None) -> float:
    started = time.monotonic()
    while not predicate() and not (stop is not None and stop.is_set()):
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.2)
    return time.monotonic() - started


def test_a_route_applies_within_seconds_and_answers_as_its_version(llmloop_server, versions, store):
    v1, v2 = versions
    store.set(ROUTE, [Version(v1, 100)], None, actor="test")
    took = _wait_until(lambda: ROUTE in _model_ids(llmloop_server), 5.0)
    assert _served(llmloop_server, "alice") == v1
    store.set(ROUTE, [Version(v2, 100)], None, actor="test")  # a new adapter version
    took = max(took, _wait_until(lambda: _served(llmloop_server, "alice") == v2, 5.0))
    print(f"route applied in {took:.1f} s")


def test_no_request_fails_while_a_canary_starts_is_promoted_and_rolled_back(
    llmloop_server, versions, store
):
    v1, v2 = versions
    store.set(ROUTE, [Version(v1, 100)], None, actor="test")
    _wait_until(lambda: ROUTE in _model_ids(llmloop_server), 5.0)
    stop = threading.Event()
    served: list[str] = []
    errors: list[BaseException] = []

    def client_loop(n: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                served.append(_served(llmloop_server, f"user-{n}-{i}", stream=True))
            except BaseException as e:
                errors.append(e)
                stop.set()
            i += 1

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        loops = [pool.submit(client_loop, n) for n in range(6)]
        time.sleep(3)
        store.start_canary(ROUTE, Canary(v2, 50, started=time.time()), actor="test")
        _wait_until(lambda: v2 in served, 60, stop)  # the canary's adapter loaded and answering
        store.promote(ROUTE, actor="test")
        _wait_until(lambda: served[-6:] == [v2] * 6, 60, stop)
        store.rollback(ROUTE, actor="test")  # back to v1: v2 unloads under streams on it
        _wait_until(lambda: served[-6:] == [v1] * 6, 60, stop)
        time.sleep(2)
        stop.set()
        for loop in loops:
            loop.result()
    assert not errors, errors[:3]
    assert set(served) == {v1, v2}
    assert v2 not in _model_ids(llmloop_server)  # unloaded once no route names it


def _model_ids(server) -> set[str]:
    return {model.id for model in server.client.models.list()}
