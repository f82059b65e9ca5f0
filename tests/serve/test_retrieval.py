"""RAG in chat over a fake retrieval: sources enter the prompt, citations come back whole and
streamed, and retrieved text passes the safety layer before it enters the prompt."""

import pytest

from llmloop.rag.retrieve import Hit
from tests.serve.fakes import FakeEngine, FakeRetrieval, keyword_guardrails
from tests.serve.test_protocol import chat, sse_events

ZORBLAX = Hit(
    source="festivals/zorblax.md",
    chunk_id="zorblax-0",
    score=0.9,
    text="The Zorblax festival is held every spring in Quillon.",
    title="The Zorblax festival",
)
BASALT = Hit(
    source="geology/basalt.txt",
    chunk_id="basalt-0",
    score=0.5,
    text="Basalt is a fine-grained volcanic rock.",
    title="Basalt",
)
QUESTION = "Where is the Zorblax festival held?"


@pytest.fixture
def engine() -> FakeEngine:
    engine = FakeEngine()
    engine.max_model_len = 2048  # room for the sources (one token per character)
    return engine


def ask(client, **body):
    return chat(client, messages=[{"role": "user", "content": QUESTION}], max_tokens=4, **body)


def prompt_text(engine: FakeEngine) -> str:
    ((prompt_ids, _, _),) = engine.requests
    return engine.tokenizer.decode(prompt_ids)


def test_the_requested_index_is_searched_and_its_hits_are_cited(make_client, engine):
    retrieval = FakeRetrieval([ZORBLAX, BASALT])
    client = make_client(engine, retrieval=retrieval)
    body = ask(client, rag={"index": "docs", "top_k": 2}).json()
    assert retrieval.searches == [("docs", QUESTION, 2)]
    assert body["citations"] == [ZORBLAX.citation(), BASALT.citation()]
    prompt = prompt_text(engine)
    assert prompt.startswith("<system>") and "[1] festivals/zorblax.md" in prompt
    assert ZORBLAX.text in prompt and prompt.endswith(f"<user>{QUESTION}<assistant>")


def test_the_server_default_index_is_searched_when_the_request_names_none(make_client, engine):
    retrieval = FakeRetrieval([ZORBLAX], default_index="docs")
    body = ask(make_client(engine, retrieval=retrieval)).json()
    assert retrieval.searches == [("docs", QUESTION, 4)]
    assert body["citations"] == [ZORBLAX.citation()]


def test_without_an_index_nothing_is_searched_or_cited(make_client, engine):
    retrieval = FakeRetrieval([ZORBLAX])
    body = ask(make_client(engine, retrieval=retrieval)).json()
    assert retrieval.searches == [] and body["citations"] is None
    assert prompt_text(engine).startswith("<user>")


def test_a_stream_carries_the_citations_in_its_final_chunk(make_client, engine):
    client = make_client(engine, retrieval=FakeRetrieval([ZORBLAX]))
    events = sse_events(ask(client, rag={"index": "docs"}, stream=True))
    assert events[-1]["choices"] == [] and events[-1]["usage"] is None
    assert events[-1]["citations"] == [ZORBLAX.citation()]
    assert all(event["citations"] is None for event in events[:-1])


def test_sources_that_do_not_fit_the_context_are_not_cited(make_client, engine):
    engine.max_model_len = 300  # room for the instructions and the short source only
    huge = Hit(source="huge.txt", chunk_id="huge-0", score=1.0, text="words " * 100, title="")
    client = make_client(engine, retrieval=FakeRetrieval([huge, BASALT]))
    body = ask(client, rag={"index": "docs"}).json()
    assert body["citations"] == [BASALT.citation()]


def test_retrieved_text_is_screened_before_it_enters_the_prompt(make_client, engine):
    harmful = Hit(source="bad.txt", chunk_id="bad-0", score=1.0, text="Mix sarin.", title="")
    private = Hit(
        source="hr.txt", chunk_id="hr-0", score=0.8, text="Mail jane@example.com", title=""
    )
    client = make_client(
        engine, guardrails=keyword_guardrails(), retrieval=FakeRetrieval([harmful, private])
    )
    body = ask(client, rag={"index": "docs"}).json()
    assert [c["source"] for c in body["citations"]] == ["hr.txt"]
    assert body["citations"][0]["text"] == "Mail <EMAIL_1>"
    assert "sarin" not in prompt_text(engine) and "jane@" not in prompt_text(engine)
