"""A served chat answer cites the one document that holds the answer (real engine, real index)."""

import subprocess
import sys

import pytest

MODEL = "smollm2-135m-instruct"

DOCUMENTS = {
    "festivals/zorblax.md": "# The Zorblax festival\n\nThe Zorblax festival is held every spring in the "
    "mountain town of Quillon. Visitors eat blue pancakes and race wooden goats.",
    "geology/basalt.txt": "Basalt is a fine-grained volcanic rock formed from the rapid cooling of lava "
    "rich in magnesium and iron. It makes up most of the ocean floor.",
    "cooking/bread.html": "<html><head><title>Bread</title></head><body><h1>Sourdough</h1><p>Sourdough "
    "bread rises thanks to a starter of wild yeast and lactic acid bacteria.</p></body></html>",
}


@pytest.fixture(scope="module")
def rag_index(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("docs")
    for name, text in DOCUMENTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    name = "serve-test-docs"
    subprocess.run(
        [sys.executable, "-m", "llmloop.cli", "rag", "index", str(root), "--name", name], check=True
    )
    return name


def test_chat_with_rag_cites_the_right_source(llmloop_server, rag_index):
    response = llmloop_server.client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "In which town is the Zorblax festival held?"}],
        max_tokens=40,
        temperature=0,
        extra_body={"rag": {"index": rag_index, "top_k": 2}},
    )
    citations = response.model_extra["citations"]
    assert citations, "no citations returned"
    assert citations[0]["source"].endswith("zorblax.md")
    assert {"source", "chunk_id", "score", "text"} <= set(citations[0])
    assert "Quillon" in response.choices[0].message.content


def test_streamed_rag_answer_carries_citations_in_the_final_chunk(llmloop_server, rag_index):
    stream = llmloop_server.client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is basalt?"}],
        max_tokens=16,
        stream=True,
        extra_body={"rag": {"index": rag_index, "top_k": 1}},
    )
    chunks = list(stream)
    assert chunks[-1].model_extra["citations"][0]["source"].endswith("basalt.txt")


def test_unknown_index_is_404(llmloop_server):
    import openai

    with pytest.raises(openai.NotFoundError):
        llmloop_server.client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"rag": {"index": "nope"}},
        )
