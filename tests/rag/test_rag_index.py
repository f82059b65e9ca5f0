"""Index → query round trips, incremental re-indexing and atomic publishing, on a fake embedder."""

import threading
from pathlib import Path

import pytest

from llmloop.rag import index as index_files
from llmloop.rag.errors import IndexConfigError, IndexNotFoundError, NothingToIndexError
from llmloop.rag.index import IndexConfig
from llmloop.rag.indexer import index_paths
from llmloop.rag.layout import index_root, list_indexes, live_version_dir
from llmloop.rag.retrieve import Retriever


@pytest.fixture(autouse=True)
def _home(isolated_home: Path) -> Path:
    return isolated_home


def test_round_trip_every_mode_finds_the_right_file(corpus: Path, fake_embedder) -> None:
    result = index_paths("docs", [corpus], fake_embedder, show_progress=False)
    assert (result.num_files, result.num_embedded_files, result.skipped) == (4, 4, [])
    retriever = Retriever.open("docs", embedder=fake_embedder)
    for mode in ("hybrid", "dense", "bm25"):
        hits = retriever.search("why does bread dough rise with yeast", top_k=2, mode=mode)
        assert hits[0].source == str(corpus / "baking.txt"), mode
        assert hits[0].title == "Bread baking"
        assert hits[0].citation().keys() == {"source", "chunk_id", "score", "text"}
    assert list_indexes() == ["docs"]


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_round_trip(corpus: Path, fake_embedder, index_type: str) -> None:
    index_paths(
        "docs", [corpus], fake_embedder, config=IndexConfig(index_type), show_progress=False
    )
    hits = Retriever.open("docs", embedder=fake_embedder).search("octopus hearts", 1, "dense")
    assert Path(hits[0].source).name == "octopus.html"


def test_reindex_embeds_only_changed_files_and_drops_deleted(corpus: Path, fake_embedder) -> None:
    index_paths("docs", [corpus], fake_embedder, show_progress=False)
    before = {c.source: c for c in index_files.read_chunks(live_version_dir("docs"))}

    fake_embedder.num_encoded = 0
    unchanged = index_paths("docs", [corpus], fake_embedder, show_progress=False)
    assert (unchanged.num_reused_files, unchanged.num_embedded_files) == (4, 0)
    assert fake_embedder.num_encoded == 0

    (corpus / "baking.txt").write_text("Sourdough\n=========\n\nA starter replaces yeast.\n")
    (corpus / "animals" / "tides.md").unlink()
    (corpus / "new.md").write_text("# Comets\n\nComets grow tails near the sun.\n")
    changed = index_paths("docs", [corpus], fake_embedder, show_progress=False)
    assert (changed.num_reused_files, changed.num_embedded_files) == (2, 2)
    assert changed.num_removed_files == 1
    assert fake_embedder.num_encoded == changed.num_embedded_chunks == 2

    after = {c.source: c for c in index_files.read_chunks(live_version_dir("docs"))}
    volcano = str(corpus / "volcanoes.md")
    assert after[volcano] == before[volcano]
    assert str(corpus / "animals" / "tides.md") not in after
    retriever = Retriever.open("docs", embedder=fake_embedder)
    assert Path(retriever.search("sourdough starter", 1)[0].source).name == "baking.txt"
    assert Path(retriever.search("comets tails", 1)[0].source).name == "new.md"
    assert len(list(index_root("docs").glob("v-*"))) == 1  # older versions are cleaned up


def test_bad_files_are_reported_and_skipped(corpus: Path, fake_embedder) -> None:
    (corpus / "empty.md").write_text("")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4 nonsense")
    result = index_paths("docs", [corpus], fake_embedder, show_progress=False)
    assert result.num_files == 4
    assert sorted(Path(m.split(":")[0]).name for m in result.skipped) == ["broken.pdf", "empty.md"]


def test_nothing_readable_is_an_error(tmp_path: Path, fake_embedder) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(NothingToIndexError, match="every file was skipped"):
        index_paths("docs", [tmp_path], fake_embedder, show_progress=False)
    (tmp_path / "sub").mkdir()
    with pytest.raises(NothingToIndexError, match=r"no \.txt"):
        index_paths("docs", [tmp_path / "sub"], fake_embedder, show_progress=False)


def test_crash_while_writing_leaves_the_previous_index(
    corpus: Path, fake_embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_paths("docs", [corpus], fake_embedder, show_progress=False)
    live = live_version_dir("docs")
    (corpus / "volcanoes.md").write_text("# Changed\n\nNew text about glaciers.\n")

    def crash(version_dir: Path, *args, **kwargs) -> None:
        (version_dir / index_files.CHUNKS_FILE).write_text("half written")
        raise KeyboardInterrupt

    monkeypatch.setattr(index_files, "write_version", crash)
    with pytest.raises(KeyboardInterrupt):
        index_paths("docs", [corpus], fake_embedder, show_progress=False)
    assert live_version_dir("docs") == live
    assert list(index_root("docs").glob("v-*")) == [live]
    hits = Retriever.open("docs", embedder=fake_embedder).search("magma chamber", 1)
    assert Path(hits[0].source).name == "volcanoes.md"


def test_unknown_index_lists_the_existing_ones(corpus: Path, fake_embedder) -> None:
    index_paths("docs", [corpus], fake_embedder, show_progress=False)
    with pytest.raises(IndexNotFoundError, match=r"no index named 'nope' \(existing: docs\)"):
        Retriever.open("nope", embedder=fake_embedder)


def test_retriever_notices_a_newer_version(corpus: Path, fake_embedder) -> None:
    index_paths("docs", [corpus], fake_embedder, show_progress=False)
    retriever = Retriever.open("docs", embedder=fake_embedder)
    assert not retriever.is_stale()
    (corpus / "baking.txt").write_text("Pasta\n=====\n\nBoil water.\n")
    index_paths("docs", [corpus], fake_embedder, show_progress=False)
    assert retriever.is_stale()


def test_concurrent_searches_agree(corpus: Path, fake_embedder) -> None:
    index_paths("docs", [corpus], fake_embedder, show_progress=False)
    retriever = Retriever.open("docs", embedder=fake_embedder)
    queries = ["magma", "yeast dough", "octopus blood", "moon gravity"] * 25
    expected = {q: retriever.search(q, 3) for q in set(queries)}
    results: list[bool] = []

    def worker(chunk: list[str]) -> None:
        results.extend(retriever.search(q, 3) == expected[q] for q in chunk)

    threads = [threading.Thread(target=worker, args=(queries[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == len(queries) and all(results)


def test_opening_with_another_embedder_is_refused(corpus: Path, fake_embedder) -> None:
    index_paths("docs", [corpus], fake_embedder, show_progress=False)
    fake_embedder.name = "another-model"
    with pytest.raises(IndexConfigError, match="built with fake-bow"):
        Retriever.open("docs", embedder=fake_embedder)
