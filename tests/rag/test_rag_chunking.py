import itertools

import pytest

from llmloop.rag.chunking import ChunkingConfig, chunk_document, parse_sections
from llmloop.rag.errors import IndexConfigError
from llmloop.rag.loaders import Document


def words(texts: list[str]) -> list[int]:
    return [len(text.split()) for text in texts]


def document(text: str, title: str = "Guide") -> Document:
    return Document(source="/docs/guide.md", title=title, text=text, content_hash="ab" * 32)


def test_headings_start_chunks_and_give_sections() -> None:
    text = "# Guide\n\nIntro words here.\n\n## Setup\n\nInstall it.\n\n### Linux\n\nUse apt.\n\n## Use\n\nRun it."
    chunks = chunk_document(document(text), ChunkingConfig(50, 0), words)
    assert [(c.section, c.text) for c in chunks] == [
        ("", "Intro words here."),
        ("Setup", "Install it."),
        ("Setup > Linux", "Use apt."),
        ("Use", "Run it."),
    ]
    assert [c.position for c in chunks] == [0, 1, 2, 3]
    assert chunks[2].embedding_text() == "Guide > Setup > Linux\nUse apt."


def test_rst_underlined_headings_nest_by_first_appearance() -> None:
    text = "Top\n***\n\nA.\n\nPart\n====\n\nB.\n\nSub\n---\n\nC.\n\nPart two\n========\n\nD."
    sections = [section for section, _ in parse_sections(text)]
    assert sections == ["Top", "Top > Part", "Top > Part > Sub", "Top > Part two"]


def test_chunks_stay_within_budget_and_overlap_inside_a_paragraph() -> None:
    sentences = [f"Sentence number {i} has exactly seven words." for i in range(40)]
    config = ChunkingConfig(chunk_tokens=50, overlap_tokens=10)
    chunks = chunk_document(document(" ".join(sentences)), config, words)
    assert len(chunks) > 5
    assert all(len(c.text.split()) <= 50 for c in chunks)
    for before, after in itertools.pairwise(chunks):
        last_sentence = before.text.split(". ")[-1]
        assert after.text.startswith(last_sentence.rstrip("."))  # one 7-word sentence repeated
    covered = " ".join(c.text for c in chunks)
    assert all(s in covered for s in sentences)


def test_paragraphs_are_not_split_when_they_fit() -> None:
    paragraphs = [" ".join(f"p{p}w{i}." for i in range(20)) for p in range(5)]
    config = ChunkingConfig(chunk_tokens=45, overlap_tokens=0)
    chunks = chunk_document(document("\n\n".join(paragraphs)), config, words)
    assert [c.text for c in chunks] == [
        "\n\n".join(paragraphs[0:2]),
        "\n\n".join(paragraphs[2:4]),
        paragraphs[4],
    ]


def test_long_code_blocks_split_between_lines_not_into_sentences() -> None:
    code = "\n".join(f"   x{i} = compute(a, b): return {i}." for i in range(30))
    chunks = chunk_document(
        document(code), ChunkingConfig(chunk_tokens=40, overlap_tokens=0), words
    )
    assert len(chunks) > 1
    for chunk in chunks:
        assert all(line.startswith("   x") for line in chunk.text.splitlines())


def test_a_word_run_without_breaks_is_cut_into_windows() -> None:
    text = " ".join(["token"] * 500)
    chunks = chunk_document(
        document(text), ChunkingConfig(chunk_tokens=64, overlap_tokens=0), words
    )
    assert all(len(c.text.split()) <= 64 for c in chunks)
    assert sum(len(c.text.split()) for c in chunks) == 500


def test_chunk_ids_depend_on_path_and_content() -> None:
    config = ChunkingConfig()
    first = chunk_document(document("Same text."), config, words)[0]
    again = chunk_document(document("Same text."), config, words)[0]
    moved = chunk_document(Document("/other.md", "Guide", "Same text.", "ab" * 32), config, words)[
        0
    ]
    assert first.chunk_id == again.chunk_id != moved.chunk_id


@pytest.mark.parametrize(("chunk_tokens", "overlap_tokens"), [(8, 0), (100, 60), (100, -1)])
def test_bad_config_names_the_flag(chunk_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(IndexConfigError, match="--"):
        ChunkingConfig(chunk_tokens, overlap_tokens)
