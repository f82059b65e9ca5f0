"""Source diversity in the top k (per-source cap, near-duplicates) and the 'not in the sources'
threshold: unit tests of ``diversify``, then through a real index on the fake embedder."""

from pathlib import Path

import pytest

from llmloop.rag.chunking import Chunk
from llmloop.rag.errors import IndexConfigError
from llmloop.rag.indexer import index_paths
from llmloop.rag.prompt import NOT_IN_SOURCES, augment_messages
from llmloop.rag.retrieve import FusionConfig, Retriever, diversify


def chunk(source: str, text: str = "") -> Chunk:
    return Chunk(f"{source}-{text}", source, "", "", 0, text or f"text of {source}")


def test_cap_one_takes_one_chunk_per_source_before_any_second() -> None:
    ranked = [chunk("a", "a1"), chunk("a", "a2"), chunk("a", "a3"), chunk("b"), chunk("c")]
    assert diversify(ranked, 3, max_per_source=1, near_duplicate=0) == [0, 3, 4]
    assert diversify(ranked, 3, max_per_source=2, near_duplicate=0) == [0, 1, 3]


def test_held_back_chunks_fill_the_top_k_when_other_sources_run_out() -> None:
    ranked = [chunk("a", "a1"), chunk("a", "a2"), chunk("b"), chunk("a", "a3")]
    assert diversify(ranked, 4, max_per_source=1, near_duplicate=0) == [0, 2, 1, 3]
    assert diversify(ranked, 2, max_per_source=0, near_duplicate=0) == [0, 1]


def test_near_duplicates_of_a_better_chunk_are_dropped() -> None:
    same = "the finally clause runs when the try block exits by return"
    ranked = [chunk("try", same), chunk("compound", same + " too"), chunk("other", "unrelated")]
    assert diversify(ranked, 2, max_per_source=0, near_duplicate=0.8) == [0, 2]
    assert diversify(ranked, 2, max_per_source=0, near_duplicate=0) == [0, 1]


@pytest.mark.parametrize(
    "kwargs", [{"max_per_source": -1}, {"near_duplicate": 1.5}, {"min_similarity": 2}]
)
def test_bad_diversity_config(kwargs: dict) -> None:
    with pytest.raises(IndexConfigError):
        FusionConfig(**kwargs)


@pytest.fixture
def lopsided(isolated_home: Path, tmp_path: Path, fake_embedder) -> Path:
    """One long file that mentions magma in every section, one short file that does once."""
    root = tmp_path / "lopsided"
    root.mkdir()
    sections = "\n\n".join(
        f"# Part {i}\n\nMagma chamber pressure note {i}: magma rises through the crust."
        for i in range(6)
    )
    (root / "long.md").write_text(sections + "\n")
    (root / "short.md").write_text("# Lava\n\nMagma that reaches the surface is called lava.\n")
    index_paths("lop", [root], fake_embedder, show_progress=False)
    return root


def test_the_cap_lets_a_second_source_into_the_top_k(lopsided: Path, fake_embedder) -> None:
    question = "magma chamber pressure"
    capped = Retriever.open("lop", embedder=fake_embedder).search(question, 3)
    assert [Path(h.source).name for h in capped].count("short.md") == 1
    assert len({h.chunk_id for h in capped}) == 3
    uncapped = Retriever.open(
        "lop", embedder=fake_embedder, fusion=FusionConfig(max_per_source=0)
    ).search(question, 3)
    assert {Path(h.source).name for h in uncapped} == {"long.md"}


def test_below_the_similarity_threshold_there_are_no_hits(lopsided: Path, fake_embedder) -> None:
    strict = Retriever.open("lop", embedder=fake_embedder, fusion=FusionConfig(min_similarity=0.99))
    assert strict.search("magma chamber pressure", 4) == []
    assert strict.search("magma chamber pressure", 4, "dense") == []
    assert strict.search("magma chamber pressure", 4, "bm25")  # BM25 has no cosine to judge
    assert Retriever.open("lop", embedder=fake_embedder).search("magma chamber pressure", 4)


def test_no_hits_tell_the_model_the_answer_is_not_in_the_sources() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}]
    augmented, used = augment_messages(messages, [], lambda text: len(text.split()), 100)
    assert used == [] and augmented[0]["content"] == "Be brief.\n\n" + NOT_IN_SOURCES
    assert messages[0]["content"] == "Be brief."  # not modified in place


@pytest.mark.embedder
def test_minilm_threshold_separates_an_off_topic_question(
    isolated_home: Path, corpus: Path, real_embedder
) -> None:
    index_paths("docs", [corpus], real_embedder, show_progress=False)
    retriever = Retriever.open("docs", embedder=real_embedder)
    assert retriever.search("What is the offside rule in football?", 4) == []
    hits = retriever.search("Which animal has blue blood?", 4)
    assert Path(hits[0].source).name == "octopus.html"
    assert len({h.source for h in hits}) == len(hits)  # one chunk per source
