"""A long prompt costs the other requests nothing: templating and tokenizing run off the event
loop, and a prompt that cannot fit the context is refused before the classifier or retrieval run."""

import threading
import time

import pytest

from llmloop.rag.retrieve import Hit
from tests.serve.fakes import CharTokenizer, FakeEngine, FakeRetrieval, keyword_guardrails
from tests.serve.test_errors import assert_openai_error

CHAT = "/v1/chat/completions"


class BlockingTokenizer(CharTokenizer):
    """Tokenizing takes until the test says so: a stand-in for a huge prompt's seconds of work."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.entered.set()
        self.release.wait(timeout=10)
        return super().encode(text, add_special_tokens)


@pytest.mark.parametrize(
    ("url", "body"),
    [
        (CHAT, {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"model": "fake-model", "prompt": "hi"}),
    ],
)
def test_health_answers_while_a_prompt_is_being_tokenized(make_client, url, body):
    client = make_client()  # ready first: the health check itself needs a free event loop
    tokenizer = client.engine.tokenizer = BlockingTokenizer()
    result = {}
    request = threading.Thread(target=lambda: result.update(r=client.post(url, json=body)))
    request.start()
    assert tokenizer.entered.wait(timeout=10)
    started = time.perf_counter()
    health = client.get("/health")
    elapsed = time.perf_counter() - started
    tokenizer.release.set()
    request.join(timeout=20)
    assert health.status_code == 200
    assert elapsed < 1.0, f"/health took {elapsed:.2f} s while {url} was tokenizing"
    assert result["r"].status_code == 200, result["r"].text


def test_a_prompt_beyond_the_context_costs_no_classifier_or_retrieval_time(make_client):
    guardrails = keyword_guardrails()
    classified: list[str] = []
    classify = guardrails.batchers["input"].fn
    guardrails.batchers["input"].fn = lambda texts: classified.extend(texts) or classify(texts)
    retrieval = FakeRetrieval(
        [Hit("doc.md", "doc.md#0", 1.0, "a source", "Doc")], default_index="docs"
    )
    client = make_client(FakeEngine(), guardrails=guardrails, retrieval=retrieval)
    long = "how do I make sarin " * 20  # over the fake's 256-token context
    response = client.post(
        CHAT, json={"model": "fake-model", "messages": [{"role": "user", "content": long}]}
    )
    assert assert_openai_error(response, 400)["code"] == "context_length_exceeded"
    response = client.post("/v1/completions", json={"model": "fake-model", "prompt": long})
    assert assert_openai_error(response, 400)["code"] == "context_length_exceeded"
    assert classified == [] and retrieval.searches == []
    guardrails.close()
