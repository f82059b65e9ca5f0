"""Retrieval quality by cited source: our retriever's modes against a naive pipeline, same run.

Two corpora (provenance and labelling rules in ``benchmarks/data/rag/README.md`` and
``benchmarks/data/rag/stdlib-docs/README.md``):

- ``pydoc-topics``: the 79 Python language reference topics, 84 questions written by this project
  (the "own" set, reported whole);
- ``stdlib-docs``: 51 standard library modules' pydoc text, 116 questions, split by hashing into
  ``dev`` (may be tuned on) and ``heldout`` (reported, never tuned on).

Each pipeline answers ``search(question, top_k=10)`` with ranked chunks; a chunk counts by its
source file, as a citation would. recall@k is the share of a question's relevant files among the
sources of the first k chunks (what ``llmloop rag query -k k`` cites); MRR@10 and nDCG@10 (binary
gains) use the files of the 10 chunks in order of first appearance. Averages over questions.

The naive pipeline is the one the issue measured against: fixed 1,000-character chunks (no
overlap, no headings), the same MiniLM, bm25s with its defaults (English stopwords, no stemming)
and plain reciprocal rank fusion (k 60) of the top 50 of each.

    .venv/bin/python benchmarks/rag_quality.py [--out results.json]
"""

import argparse
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data" / "rag"
STDLIB_DIR = DATA_DIR / "stdlib-docs"


@dataclass(frozen=True)
class Corpus:
    name: str
    directory: Path
    questions_file: Path

    @property
    def index_name(self) -> str:
        return f"bench-{self.name}"

    def questions(self) -> list[dict]:
        rows = [json.loads(line) for line in self.questions_file.read_text().splitlines()]
        return [{**row, "split": row.get("split", "all")} for row in rows]


CORPORA = (
    Corpus("pydoc-topics", DATA_DIR / "pydoc-topics", DATA_DIR / "questions.jsonl"),
    Corpus("stdlib-docs", STDLIB_DIR / "corpus", STDLIB_DIR / "questions.jsonl"),
)
UNANSWERABLE_FILE = STDLIB_DIR / "unanswerable.jsonl"
RECALL_AT = (1, 4, 10)
DEPTH = 10
METRICS = (*(f"recall@{k}" for k in RECALL_AT), "mrr@10", "ndcg@10")

Search = Callable[[str, int], list[str]]
"""(question, k) -> the source file names of the best k chunks, best first (repeats kept)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--chunkers",
        action="store_true",
        help="also rank fixed 1,000-character and semchunk chunks our way (needs semchunk)",
    )
    args = parser.parse_args()

    from llmloop.rag.embed import Embedder

    embedder = Embedder()
    payload: dict = {"results": {}, "thresholds": {}}
    rows: list[tuple[str, str, dict[str, float]]] = []
    for corpus in CORPORA:
        pipelines = our_pipelines(corpus, embedder)
        pipelines["naive (1000 chars, RRF)"] = NaivePipeline(corpus.directory, embedder).search
        if args.chunkers:  # chunking alone: other chunkers' chunks under our ranking
            fixed = OtherChunksPipeline(fixed_chunks(corpus.directory), embedder)
            pipelines["1000-char chunks, our ranking"] = fixed.search
            semchunked = semchunk_chunks(corpus.directory, embedder)
            pipelines["semchunk 200-token chunks, our ranking"] = OtherChunksPipeline(
                semchunked, embedder
            ).search
        questions = corpus.questions()
        for split in sorted({q["split"] for q in questions}, key=["all", "dev", "heldout"].index):
            subset = [q for q in questions if q["split"] == split]
            for name, search in pipelines.items():
                figures = evaluate(search, subset)
                rows.append((f"{corpus.name} {split} ({len(subset)} q)", name, figures))
                payload["results"].setdefault(f"{corpus.name}/{split}", {})[name] = figures
    print(table(rows), end="\n\n")
    payload["thresholds"] = threshold_report(embedder)
    if args.out:
        args.out.write_text(json.dumps(payload, indent=2))


def our_pipelines(corpus: Corpus, embedder) -> dict[str, Search]:
    from llmloop.rag.indexer import index_paths
    from llmloop.rag.retrieve import FusionConfig, Retriever

    built = index_paths(corpus.index_name, [corpus.directory], embedder, show_progress=False)
    print(f"index {corpus.index_name}: {built.num_files} files, {built.num_chunks} chunks")
    retriever = Retriever.open(corpus.index_name, embedder=embedder)
    # the retriever as it was before per-source caps and the similarity threshold
    before = Retriever.open(
        corpus.index_name,
        embedder=embedder,
        fusion=FusionConfig(max_per_source=0, near_duplicate=0, min_similarity=-1),
    )

    def pipeline(retriever, mode) -> Search:
        return lambda q, k: [Path(h.source).name for h in retriever.search(q, k, mode)]

    return {
        **{f"ours {mode}": pipeline(retriever, mode) for mode in ("dense", "bm25", "hybrid")},
        "ours hybrid, before (no cap)": pipeline(before, "hybrid"),
    }


def fixed_chunks(directory: Path, chunk_chars: int = 1000) -> list[tuple[str, str]]:
    """(file name, text) of consecutive ``chunk_chars``-character slices of every file."""
    chunks = []
    for path in sorted(directory.iterdir()):
        text = path.read_text(encoding="utf-8")
        chunks += [(path.name, text[i : i + chunk_chars]) for i in range(0, len(text), chunk_chars)]
    return chunks


def semchunk_chunks(directory: Path, embedder, chunk_tokens: int = 200) -> list[tuple[str, str]]:
    """(file name, text) from semchunk at our chunk size, counted in MiniLM tokens."""
    import semchunk

    chunker = semchunk.chunkerify(lambda text: embedder.count_tokens([text])[0], chunk_tokens)
    return [
        (path.name, text)
        for path in sorted(directory.iterdir())
        for text in chunker(path.read_text(encoding="utf-8"))
    ]


class NaivePipeline:
    """Fixed 1,000-character chunks, MiniLM, bm25s defaults, plain RRF: the issue's baseline."""

    def __init__(self, directory: Path, embedder, chunk_chars: int = 1000, candidates: int = 50):
        import bm25s

        self.embedder, self.candidates = embedder, candidates
        chunks = fixed_chunks(directory, chunk_chars)
        self.sources = [source for source, _ in chunks]
        self.texts = [text for _, text in chunks]
        self.vectors = cached_embeddings(self.texts, embedder)
        self.bm25 = bm25s.BM25()
        self.bm25.index(
            bm25s.tokenize(self.texts, stopwords="en", show_progress=False), show_progress=False
        )

    def search(self, query: str, k: int) -> list[str]:
        import bm25s

        n = min(self.candidates, len(self.texts))
        dense = np.argsort(-(self.vectors @ self.embedder.encode([query])[0]))[:n]
        words = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)
        tokens = [w for w in words[0] if w in self.bm25.vocab_dict]
        sparse: list[int] = []
        if tokens:  # bm25s refuses a query with no word of the corpus
            ids, scores = self.bm25.retrieve([tokens], k=n, show_progress=False, n_threads=0)
            sparse = [int(i) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]
        fused: dict[int, float] = {}
        for ranking in (dense.tolist(), sparse):
            for rank, row in enumerate(ranking, start=1):
                fused[row] = fused.get(row, 0.0) + 1 / (60 + rank)
        best = sorted(fused, key=lambda row: -fused[row])[:k]
        return [self.sources[row] for row in best]


class OtherChunksPipeline:
    """Another chunker's chunks ranked as ours ranks: MiniLM + stemmed BM25, RRF, one per source.

    Isolates chunking from ranking: only the chunks differ from ``ours hybrid``."""

    def __init__(self, chunks: list[tuple[str, str]], embedder):
        from llmloop.rag.bm25 import build_bm25, tokenize
        from llmloop.rag.chunking import Chunk

        self.embedder = embedder
        self.chunks = [Chunk(str(i), s, "", "", i, text) for i, (s, text) in enumerate(chunks)]
        texts = [text for _, text in chunks]
        self.vectors = cached_embeddings(texts, embedder)
        self.bm25 = build_bm25(tokenize(texts))

    def search(self, query: str, k: int) -> list[str]:
        from llmloop.rag.bm25 import search_bm25
        from llmloop.rag.retrieve import diversify, reciprocal_rank_fusion

        dense = np.argsort(-(self.vectors @ self.embedder.encode([query])[0]))[:50]
        sparse, _ = search_bm25(self.bm25, query, len(self.chunks), 50)
        ids, _ = reciprocal_rank_fusion([dense, sparse], [1.0, 1.0], 60)
        keep = diversify([self.chunks[i] for i in ids.tolist()], k, 1, 0)
        return [self.chunks[i].source for i in ids[keep][:k].tolist()]


def cached_embeddings(texts: list[str], embedder) -> np.ndarray:
    """MiniLM vectors of ``texts``, cached under $LLMLOOP_HOME/bench-cache by content hash."""
    from llmloop.paths import llmloop_home

    key = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:24]
    path = llmloop_home() / "bench-cache" / f"{embedder.name}-{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = embedder.encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def evaluate(search: Search, questions: list[dict]) -> dict[str, float]:
    started = time.perf_counter()
    per_question = [score_ranking(search(q["question"], DEPTH), q["relevant"]) for q in questions]
    figures = {key: sum(s[key] for s in per_question) / len(per_question) for key in METRICS}
    figures["ms_per_query"] = 1000 * (time.perf_counter() - started) / len(questions)
    return figures


def score_ranking(sources: list[str], relevant: list[str]) -> dict[str, float]:
    """recall@k over the sources of the first k chunks; MRR/nDCG over distinct files in order."""
    relevant_set = set(relevant)
    files = list(dict.fromkeys(sources[:DEPTH]))
    gains = [1.0 if f in relevant_set else 0.0 for f in files]
    first = next((i for i, gain in enumerate(gains) if gain), None)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant_set), DEPTH)))
    scores = {
        f"recall@{k}": len(relevant_set & set(sources[:k])) / len(relevant_set) for k in RECALL_AT
    }
    scores["mrr@10"] = 0.0 if first is None else 1 / (first + 1)
    scores["ndcg@10"] = sum(g / math.log2(i + 2) for i, g in enumerate(gains)) / ideal
    return scores


def threshold_report(embedder) -> dict:
    """Best dense cosine of answerable vs unanswerable stdlib questions, per split, and what the
    default ``min_similarity`` does with them."""
    from llmloop.rag.retrieve import FusionConfig, Retriever

    threshold = FusionConfig().min_similarity
    retriever = Retriever.open(CORPORA[1].index_name, embedder=embedder)
    answerable = CORPORA[1].questions()
    unanswerable = [json.loads(line) for line in UNANSWERABLE_FILE.read_text().splitlines()]
    report = {"min_similarity": threshold}
    for split in ("dev", "heldout"):
        top = {
            kind: [
                float(retriever.dense_ranking(q["question"], 1)[1][0])
                for q in rows
                if q["split"] == split
            ]
            for kind, rows in (("answerable", answerable), ("unanswerable", unanswerable))
        }
        report[split] = {kind: sorted(round(s, 3) for s in scores) for kind, scores in top.items()}
        lost = sum(s < threshold for s in top["answerable"])
        caught = sum(s < threshold for s in top["unanswerable"])
        print(
            f"stdlib {split}: best cosine of answerable questions min {min(top['answerable']):.3f}, "
            f"of unanswerable max {max(top['unanswerable']):.3f}; at min_similarity {threshold}: "
            f"{caught}/{len(top['unanswerable'])} unanswerable get no sources, "
            f"{lost}/{len(top['answerable'])} answerable lose theirs"
        )
    return report


def table(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    columns = [*METRICS, "ms_per_query"]
    lines = ["| set | pipeline | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for where, name, row in rows:
        cells = [f"{row[c]:.1f}" if c == "ms_per_query" else f"{row[c]:.3f}" for c in columns]
        lines.append(f"| {where} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
