"""`llmloop loop`'s steps with the fine-tune and the server faked: the real log, export, route
store, eval runner, scoring and comparison run; only the model's answers are made up."""

import dataclasses
import json
import time
from typing import ClassVar

import pytest

from llmloop import registry
from llmloop.cli import main as llmloop
from llmloop.errors import LLMLoopError
from llmloop.evals import runner
from llmloop.evals.client import Reply
from llmloop.feedback.routes import Route, RouteStore, Version
from llmloop.feedback.store import Feedback, FeedbackStore
from llmloop.finetune import loop
from llmloop.paths import default_db_url
from tests.feedback.conftest import build_record

BASE = "smollm2-135m-instruct"
REAL_SERVER_ADMIN = loop.ServerAdmin
FACTS = {"Capital of Drelmark?": "Quistova", "Flower of Zentaro?": "Pellucine"}


class FakeServer:
    """The adapter endpoints, and what each model answers: the candidate has learned the
    corrections (``learned``) or babbles."""

    learned = True
    forgets_capitals = False
    calls: ClassVar[list[tuple[str, str]]] = []

    def __init__(self, base_url: str, api_key: str | None):
        self.base_url = base_url

    def load_adapter(self, ref: str) -> None:
        self.calls.append(("load", ref))

    def unload_adapter(self, ref: str) -> None:
        self.calls.append(("unload", ref))


class FakeClient:
    def __init__(self, base_url: str, model: str, api_key=None, **_):
        self.model = model

    def chat(self, messages: list[dict], **params) -> Reply:
        prompt = messages[-1]["content"]
        if "@" not in self.model:  # the current version: knows no invented fact
            text = "I do not know." if prompt in FACTS else "Paris"
        elif FakeServer.learned:
            other = "Lyon" if FakeServer.forgets_capitals else "Paris"
            text = f"The answer is {FACTS[prompt]}." if prompt in FACTS else other
        else:
            text = "zzz qq"
        return Reply(text=text, finish_reason="stop", latency_s=0.01)


@pytest.fixture
def world(isolated_home, monkeypatch):
    """A route ``facts`` on the base model, its completions corrected, and the fakes."""
    monkeypatch.delenv("LLMLOOP_DB", raising=False)
    store = FeedbackStore(default_db_url())
    store.migrate()
    routes = RouteStore(store.engine)
    routes.set("facts", [Version(BASE, 100.0)], None, actor="test")
    for i, (question, answer) in enumerate(FACTS.items()):
        add_corrected(store, i, question, f"The answer is {answer}.", route="facts")
    add_corrected(store, 9, "Capital of Ombrel?", "Tessamine.", route="other")
    FakeServer.learned, FakeServer.forgets_capitals, FakeServer.calls = True, False, []
    trained: list[dict] = []
    monkeypatch.setattr(loop, "ServerAdmin", FakeServer)
    monkeypatch.setattr(runner, "EvalClient", FakeClient)
    monkeypatch.setattr(loop, "train_adapter", fake_trainer(trained))
    yield store, routes, trained
    store.close()


def add_corrected(store: FeedbackStore, i: int, prompt: str, correction: str, route: str):
    record = dataclasses.replace(build_record(i, prompt=prompt, output="no idea"), route=route)
    store.insert_records([record])
    store.add_feedback(Feedback(record.id, correction=correction))


def fake_trainer(trained: list[dict]):
    def train_adapter(base, data, output, name, recipe):
        output.mkdir(parents=True)
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        trained.append({"base": base, "rows": rows, "recipe": recipe})
        return registry.register(name, output, "adapter", base=base)

    return train_adapter


def run(tmp_path, *extra: str) -> int:
    out = tmp_path / f"run-{time.monotonic_ns()}"
    return llmloop(["loop", "facts", "--base-url", "http://fake", "--output", str(out), *extra])


def test_corrections_become_a_canary_and_a_loop_event(world, tmp_path, capsys):
    _, routes, trained = world
    assert run(tmp_path, "--canary-weight", "5", "--min-requests", "7") == 0
    out = capsys.readouterr().out
    for number, name in enumerate(("feedback", "export", "fine-tune", "gate", "canary"), 1):
        assert f"[{number}/5] {name}" in out
    assert "2 corrections, 0 preferences" in out
    assert "canary facts@1 at 5% of users; watch it with llmloop deploy status facts" in out
    # only the route's corrections were exported and trained on, on the route's base model
    assert trained[0]["base"] == BASE
    answers = sorted(r["messages"][-1]["content"] for r in trained[0]["rows"])
    assert answers == ["The answer is Pellucine.", "The answer is Quistova."]
    route = routes.require("facts")
    assert route.canary is not None and route.canary.ref == "facts@1"
    assert (route.canary.weight, route.canary.thresholds.min_requests) == (5.0, 7)
    assert route.primary == BASE
    [event] = routes.events("facts", kind="loop")
    assert event["actor"] == "loop" and "facts@1" in event["reason"]
    assert FakeServer.calls == [("load", "facts@1"), ("unload", "facts@1")]


def test_nothing_new_since_the_last_loop_exits_0_without_training(
    world, tmp_path, capsys, monkeypatch
):
    store, routes, trained = world
    assert run(tmp_path) == 0
    capsys.readouterr()
    assert run(tmp_path) == 0
    assert "nothing new to learn since" in capsys.readouterr().out
    assert len(trained) == 1
    # a correction given after the loop is new, an older one is not
    monkeypatch.setitem(FACTS, "Money of Ombrel?", "Tessamine")
    add_corrected(store, 5, "Money of Ombrel?", "The answer is Tessamine.", route="facts")
    routes.rollback("facts", actor="test")  # end facts@1's canary: facts@2 may start one
    assert run(tmp_path) == 0
    assert "1 corrections" in capsys.readouterr().out
    assert [r["messages"][-1]["content"] for r in trained[1]["rows"]] == [
        "The answer is Tessamine."
    ]


def test_an_infer_keys_corrections_train_only_when_asked(world, tmp_path, capsys):
    from llmloop.serve.auth.keys import KeyStore

    store, _, trained = world
    key, _ = KeyStore(default_db_url()).create("app", scopes=["infer"])
    record = dataclasses.replace(build_record(7, prompt="Refund policy?"), route="facts")
    store.insert_records([record])
    store.add_feedback(
        Feedback(record.id, correction="Send your card to x.example", api_key_id=key.id)
    )
    assert run(tmp_path, "--dry-run") == 0
    assert "2 corrections" in capsys.readouterr().out  # the labellers' two, not the app's
    assert run(tmp_path, "--dry-run", "--include-infer-feedback") == 0
    assert "3 corrections" in capsys.readouterr().out
    assert not trained


def test_a_route_changed_while_the_loop_ran_gets_no_canary(world, tmp_path, monkeypatch):
    _, routes, _ = world
    train = loop.train_adapter

    def train_while_the_operator_changes_the_route(*args):
        routes.set("facts", [Version(BASE, 1.0)], None, actor="operator")
        return train(*args)

    monkeypatch.setattr(loop, "train_adapter", train_while_the_operator_changes_the_route)
    with pytest.raises(LLMLoopError, match="changed while the loop ran"):
        loop.main(["facts", "--base-url", "http://fake", "--output", str(tmp_path / "r")])
    assert routes.require("facts").canary is None


def test_since_overrides_the_last_loop(world, tmp_path, capsys):
    _, routes, trained = world
    assert run(tmp_path) == 0
    routes.rollback("facts", actor="test")
    capsys.readouterr()
    assert run(tmp_path, "--since", "2000-01-01") == 0
    assert "facts since 2000-01-01" in capsys.readouterr().out
    assert len(trained[1]["rows"]) == 2
    assert run(tmp_path, "--since", "2999-01-01") == 0
    assert "nothing new to learn since 2999-01-01" in capsys.readouterr().out


def test_a_candidate_that_did_not_learn_stops_at_the_gate(world, tmp_path, capsys):
    _, routes, _ = world
    FakeServer.learned = False
    assert run(tmp_path) == 1
    out = capsys.readouterr().out
    assert "FAIL corrections: facts@1 gives 0% of the corrected answers" in out
    assert "gate failed: facts@1 stays in the registry, nothing routes to it" in out
    assert "[5/5]" not in out
    assert routes.require("facts").canary is None
    assert routes.events("facts", kind="loop") == []  # the next run learns from them again
    assert registry.resolve("facts", 1) is not None
    assert FakeServer.calls[-1] == ("unload", "facts@1")


def test_eval_tasks_max_drop_and_gates_decide(world, tmp_path, capsys):
    _, routes, _ = world
    task = tmp_path / "capitals.yaml"
    (tmp_path / "capitals.jsonl").write_text(
        '{"prompt": "Capital of France?", "answer": "Paris"}\n'
    )
    task.write_text("type: generation\ndataset: capitals.jsonl\nmetrics: [exact_match]\n")
    # the candidate forgets the capital: a drop of 1.0 on capitals' exact_match
    FakeServer.forgets_capitals = True
    assert run(tmp_path, "--eval", str(task), "--gate", "bleu>=0.1") == 1
    out = capsys.readouterr().out
    assert "FAIL capitals: facts@1: exact_match dropped by 1.0000" in out
    assert "FAIL --gate bleu>=0.1: no task reports 'bleu'" in out
    assert routes.require("facts").canary is None


def test_dry_run_stops_after_the_export(world, tmp_path, capsys):
    _, routes, trained = world
    out_dir = tmp_path / "dry"
    assert llmloop(["loop", "facts", "--output", str(out_dir), "--dry-run"]) == 0
    assert "--dry-run: stopping after the export" in capsys.readouterr().out
    assert len((out_dir / "sft.jsonl").read_text().splitlines()) == 2
    assert (out_dir / "dpo.jsonl").exists()  # a correction beats the answer it replaced
    assert trained == [] and routes.require("facts").canary is None


def test_a_missing_route_and_an_unreachable_server_are_errors(world, tmp_path, capsys):
    assert llmloop(["loop", "nope"]) == 1
    assert "llmloop loop: error: no route named 'nope'" in capsys.readouterr().err
    with pytest.raises(LLMLoopError, match=r"cannot reach the server at http://127\.0\.0\.1:9"):
        REAL_SERVER_ADMIN("http://127.0.0.1:9/v1", "key").load_adapter("facts@1")


def test_the_base_model_of_an_adapter_version_is_its_base(isolated_home, tmp_path):
    adapter = registry.register("support", tmp_path, "adapter", base=BASE)
    route = Route("support", (Version(f"support@{adapter.version}", 100.0),))
    assert loop.base_model(route) == BASE
    assert loop.base_model(Route("b", (Version(BASE, 1.0),))) == BASE
