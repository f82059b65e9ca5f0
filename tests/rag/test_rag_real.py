"""The real parts: all-MiniLM-L6-v2, faiss and bm25s through the ``llmloop rag`` CLI."""

from pathlib import Path

import numpy as np
import pytest

from llmloop.cli import main as llmloop_main

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(isolated_home: Path, real_embedder, monkeypatch: pytest.MonkeyPatch):
    """``llmloop rag ...`` in-process, sharing the session's loaded embedder."""

    import llmloop.rag.embed
    import llmloop.rag.retrieve

    monkeypatch.setattr(llmloop.rag.embed, "Embedder", lambda **_: real_embedder)
    monkeypatch.setattr(llmloop.rag.retrieve, "Embedder", lambda **_: real_embedder)
    return lambda *argv: llmloop_main(["rag", *map(str, argv)])


def test_embedder_gives_unit_vectors_and_counts_tokens(real_embedder) -> None:
    texts = ["The octopus has three hearts.", "Lava flows from a volcano."] * 5
    vectors = real_embedder.encode(texts)  # batch path
    assert vectors.shape == (10, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one = real_embedder.encode(texts[:1])  # single-thread query path
    assert np.allclose(one[0], vectors[0], atol=1e-4)
    assert real_embedder.count_tokens(["hello world", ""]) == [2, 0]
    assert (real_embedder.name, real_embedder.dim) == ("all-MiniLM-L6-v2", 384)


def test_index_then_query_round_trip(cli, corpus: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli("index", corpus, "--name", "docs") == 0
    assert "4 files" in capsys.readouterr().out

    assert cli("query", "docs", "Which animal has blue blood?", "-k", "2") == 0
    out = capsys.readouterr().out
    assert out.startswith("[1] score ") and "octopus.html" in out.splitlines()[0]
    assert "[2] score " in out

    assert cli("query", "docs", "what pulls the oceans", "--mode", "dense", "--json") == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert '"rank": 1' in first and "tides.md" in first


def test_reindex_only_embeds_what_changed(cli, corpus: Path, capsys) -> None:
    cli("index", corpus, "--name", "docs", "--index-type", "hnsw")
    capsys.readouterr()
    (corpus / "baking.txt").write_text("Glaciers\n========\n\nGlaciers carve U-shaped valleys.\n")
    (corpus / "volcanoes.md").unlink()
    assert cli("index", "--name", "docs", "--index-type", "hnsw") == 0  # paths from last run
    out = capsys.readouterr().out
    assert "3 files" in out and "1 files embedded, 2 unchanged, 1 removed" in out
    cli("query", "docs", "how are valleys carved by ice", "-k", "1")
    assert "baking.txt" in capsys.readouterr().out
    assert cli("list") == 0
    assert "docs: 3 files" in capsys.readouterr().out


def test_bad_input_is_a_clear_error_without_traceback(cli, tmp_path: Path, capsys) -> None:
    assert cli("query", "missing", "anything") == 1
    err = capsys.readouterr().err
    assert "no index named 'missing'" in err and "Traceback" not in err
    (tmp_path / "empty.md").write_text("")
    assert cli("index", tmp_path, "--name", "docs") == 1
    assert "every file was skipped" in capsys.readouterr().err
    assert cli("index", tmp_path, "--name", "../escape") == 1
    assert "not allowed" in capsys.readouterr().err
