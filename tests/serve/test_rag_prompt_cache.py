"""What keeps a RAG chat's prompt cheap to serve: sources numbered in document order (the same
chunks make the same prefix for vLLM's prefix cache), retrieval from the conversation's last
user turns, and retrieved chunks classified once per text, still blocked on every request."""

import dataclasses

import pytest

from llmloop.rag.retrieve import Hit
from llmloop.serve.retrieval import retrieval_query
from tests.serve.fakes import FakeEngine, FakeRetrieval, keyword_guardrails
from tests.serve.test_protocol import chat
from tests.serve.test_retrieval import BASALT, ZORBLAX

HARMFUL = Hit(source="bad.txt", chunk_id="bad-0", score=1.0, text="Mix sarin.", title="")


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine()
    engine.max_model_len = 2048  # room for the sources (one token per character)
    return engine


def prompts(engine: FakeEngine) -> list[str]:
    return [engine.tokenizer.decode(prompt_ids) for prompt_ids, _, _ in engine.requests]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_sources_are_numbered_in_document_order_whatever_their_scores(make_client, engine):
    basalt_first = dataclasses.replace(BASALT, score=0.95)
    client = make_client(engine, retrieval=FakeRetrieval([basalt_first, ZORBLAX]))
    body = chat(client, messages=[user("Rocks?")], max_tokens=4, rag={"index": "docs"}).json()
    assert [c["source"] for c in body["citations"]] == [ZORBLAX.source, BASALT.source]
    (prompt,) = prompts(engine)
    assert prompt.index("[1] festivals/zorblax.md") < prompt.index("[2] geology/basalt.txt")


def test_a_follow_up_over_the_same_chunks_extends_the_previous_prompt(make_client, engine):
    """Turn 2's prompt starts with turn 1's whole prompt (system, sources, question), although
    the chunks came back in another score order: vLLM reuses all of it from its prefix cache."""
    retrieval = FakeRetrieval([ZORBLAX, BASALT])
    client = make_client(engine, retrieval=retrieval)
    first = [user("Where is the Zorblax festival held?")]
    chat(client, messages=first, max_tokens=4, rag={"index": "docs"})
    retrieval.hits = [
        dataclasses.replace(BASALT, score=0.9),
        dataclasses.replace(ZORBLAX, score=0.4),
    ]
    answer = {"role": "assistant", "content": "In Quillon."}
    follow_up = [*first, answer, user("When?")]
    chat(client, messages=follow_up, max_tokens=4, rag={"index": "docs"})
    turn1, turn2 = prompts(engine)
    assert turn2.startswith(turn1)


def test_a_follow_up_searches_with_the_questions_before_it():
    messages = [
        user("How do I catch several exceptions?"),
        {"role": "assistant", "content": "With a tuple."},
        user("Can you give a short code example?"),
        {"role": "assistant", "content": "except (A, B):"},
        user("What is a common mistake with it?"),
    ]
    assert retrieval_query(messages) == (
        "What is a common mistake with it?\n"
        "Can you give a short code example?\n"
        "How do I catch several exceptions?"
    )
    assert retrieval_query(messages, turns=1) == "What is a common mistake with it?"
    assert retrieval_query([{"role": "system", "content": "Be brief."}]) == ""


def test_the_search_gets_the_conversation_query(make_client, engine):
    retrieval = FakeRetrieval([ZORBLAX])
    client = make_client(engine, retrieval=retrieval)
    messages = [user("Zorblax?"), {"role": "assistant", "content": "A festival."}, user("Where?")]
    chat(client, messages=messages, max_tokens=4, rag={"index": "docs"})
    assert retrieval.searches == [("docs", "Where?\nZorblax?", 4)]


def test_a_retrieved_chunk_is_classified_once_and_blocked_every_time(make_client, engine):
    guardrails = keyword_guardrails()
    batcher = guardrails.batchers["input"]
    classify, classified = batcher.fn, []

    def counting(texts: list[str]):
        classified.extend(texts)
        return classify(texts)

    batcher.fn = counting
    client = make_client(engine, guardrails=guardrails, retrieval=FakeRetrieval([HARMFUL, ZORBLAX]))
    for question in ("Where is the Zorblax festival held?", "Is Zorblax in spring?"):
        body = chat(client, messages=[user(question)], max_tokens=4, rag={"index": "docs"}).json()
        assert [c["source"] for c in body["citations"]] == [ZORBLAX.source]
    assert classified.count(HARMFUL.text) == 1 and classified.count(ZORBLAX.text) == 1
    assert all("sarin" not in prompt for prompt in prompts(engine))
    assert len(prompts(engine)) == 2
