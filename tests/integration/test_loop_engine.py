"""`llmloop loop` end to end on the real vLLM engine: users ask a route invented facts, correct
its answers through ``/v1/feedback``, and one loop run turns those corrections into a canary that
answers held-out paraphrases; a run whose recipe wrecks the adapter is stopped at the gate."""

import json
import time

import pytest

from llmloop.feedback.routes import RouteStore, Version
from llmloop.feedback.store import FeedbackStore
from llmloop.finetune import loop
from llmloop.paths import default_db_url
from tests.finetune.facts import FACTS, answer_text
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.engine

ROUTE = "facts"
NUM_FACTS = 8
SMALL_KV_CACHE = 512 << 20
LEARNS = {"epochs": 25, "batch_size": 8, "save_steps": 0, "seed": 0}
"""8 facts x 2 phrasings = 16 rows, 2 steps an epoch: 50 steps at the computed learning rate, as
tests/finetune/test_engine.py's fact run (a minute or two on two cores)."""
WRECKS = {"learning_rate": 0.05, "max_steps": 8, "warmup_steps": 0, "batch_size": 8}
"""A learning rate ~30x the computed one: the adapter's answers turn to noise."""


@pytest.fixture(scope="module")
def home(default_model_dir, tmp_path_factory):
    """An LLMLOOP_HOME shared by the server and this process: one registry, one log."""
    home = tmp_path_factory.mktemp("loop-home")
    (home / "models").mkdir()
    (home / "models" / default_model_dir.name).symlink_to(default_model_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMLOOP_HOME", str(home))
        mp.delenv("LLMLOOP_DB", raising=False)
        yield home


@pytest.fixture(scope="module")
def server(home):
    args = ["--enable-lora", "--kv-cache-memory-bytes", str(SMALL_KV_CACHE)]
    args += ["--max-model-len", "1024", "--max-num-seqs", "16", "--no-safety"]
    server = start_server(args, home / "serve.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def routes(server):
    store = FeedbackStore(default_db_url())
    yield RouteStore(store.engine)
    store.close()


def ask(server: ServerProcess, model: str, question: str, user: str | None = None):
    return server.client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=16,
        temperature=0,
        user=user,
    )


def wait_for_route(server: ServerProcess) -> None:
    """The server reads routes every second; a request to the route answers once it has."""
    deadline = time.monotonic() + 30
    while True:
        try:
            ask(server, ROUTE, "Hello?")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run_loop(server: ServerProcess, tmp_path, recipe: dict, *extra: str) -> int:
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(json.dumps(recipe))  # JSON is YAML
    argv = [ROUTE, "--base-url", server.base_url, "--api-key", server.api_key]
    argv += ["--config", str(recipe_path), "--output", str(tmp_path / "run"), *extra]
    return loop.main(argv)


def test_corrections_become_a_canary_and_a_wrecked_adapter_stops_at_the_gate(
    server, routes, tmp_path_factory, capsys
):
    base = server.client.models.list().data[0].id
    routes.set(ROUTE, [Version(base, 100.0)], None, actor="test")
    wait_for_route(server)
    facts = FACTS[:NUM_FACTS]
    with server.http() as http:
        for i, (subject, answer, *questions, _) in enumerate(facts):
            for question in questions:
                completion = ask(server, ROUTE, question, user=f"user-{i}")
                assert completion.model == base
                response = http.post(
                    "/v1/feedback",
                    json={
                        "completion_id": completion.id,
                        "correction": answer_text(subject, answer),
                    },
                )
                assert response.status_code == 200, response.text

    assert run_loop(server, tmp_path_factory.mktemp("good"), LEARNS) == 0
    out = capsys.readouterr().out
    print(out)
    assert "16 corrections" in out and "[5/5] canary" in out
    route = routes.require(ROUTE)
    assert route.canary is not None and route.canary.ref == f"{ROUTE}@1"
    assert routes.events(ROUTE, kind="loop")

    right = [a for _, a, _, _, q in facts if a.lower() in answer_of(server, f"{ROUTE}@1", q)]
    print(json.dumps({"held_out_right": right, "of": NUM_FACTS}))
    assert len(right) >= 0.6 * NUM_FACTS, right

    # nothing new since that loop
    assert run_loop(server, tmp_path_factory.mktemp("again"), LEARNS) == 0
    assert "nothing new to learn" in capsys.readouterr().out

    # the same corrections again (--since), with a recipe that wrecks the adapter
    code = run_loop(server, tmp_path_factory.mktemp("bad"), WRECKS, "--since", "2000-01-01")
    out = capsys.readouterr().out
    print(out)
    assert code == 1 and "gate failed" in out and "FAIL corrections" in out
    assert routes.require(ROUTE).canary.ref == f"{ROUTE}@1"  # no new canary
    with server.http() as http:  # the gate's candidate is unloaded again
        assert f"{ROUTE}@2" not in {m["id"] for m in http.get("/v1/models").json()["data"]}


def answer_of(server: ServerProcess, model: str, question: str) -> str:
    deadline = time.monotonic() + 30
    while True:  # the canary's adapter loads within the route table's next refresh
        try:
            return (ask(server, model, question).choices[0].message.content or "").lower()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
