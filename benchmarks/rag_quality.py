"""Retrieval quality of dense-only, BM25-only and hybrid search on a labelled question set.

Corpus: the Python language reference topics shipped with CPython (``pydoc_data.topics``), one
file per topic in ``benchmarks/data/rag/pydoc-topics``; questions: ``questions.jsonl`` beside it,
each with the topic files that answer it (see ``benchmarks/data/rag/README.md``).

Relevance is judged per document: each ranking of chunks is reduced to its documents in order of
first appearance, then recall@k, MRR@10 and nDCG@10 (binary gains) are averaged over questions.

    .venv/bin/python benchmarks/rag_quality.py [--out results.json]
"""

import argparse
import json
import math
import time
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data" / "rag"
CORPUS_DIR = DATA_DIR / "pydoc-topics"
QUESTIONS_FILE = DATA_DIR / "questions.jsonl"
INDEX_NAME = "bench-pydoc-topics"
MODES = ("dense", "bm25", "hybrid")
RECALL_AT = (1, 5, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--candidates", type=int, default=50, help="chunks ranked per question")
    args = parser.parse_args()

    from llmloop.rag.embed import Embedder
    from llmloop.rag.indexer import index_paths
    from llmloop.rag.retrieve import Retriever

    embedder = Embedder()
    built = index_paths(INDEX_NAME, [CORPUS_DIR], embedder)
    print(
        f"index {INDEX_NAME}: {built.num_files} files, {built.num_chunks} chunks "
        f"({built.num_embedded_chunks} embedded now) in {built.seconds:.1f} s"
    )
    retriever = Retriever.open(INDEX_NAME, embedder=embedder)
    questions = [json.loads(line) for line in QUESTIONS_FILE.read_text().splitlines()]

    results = {}
    for mode in MODES:
        started = time.perf_counter()
        per_question = [
            score_ranking(
                documents(retriever.search(q["question"], args.candidates, mode)), q["relevant"]
            )
            for q in questions
        ]
        results[mode] = {
            key: sum(s[key] for s in per_question) / len(per_question) for key in per_question[0]
        }
        results[mode]["ms_per_query"] = 1000 * (time.perf_counter() - started) / len(questions)

    print(f"\n{len(questions)} questions, {built.num_chunks} chunks, {built.num_files} documents\n")
    print(table(results))
    if args.out:
        payload = {
            "index": INDEX_NAME,
            "num_questions": len(questions),
            "num_chunks": built.num_chunks,
            "results": results,
        }
        args.out.write_text(json.dumps(payload, indent=2))


def documents(hits) -> list[str]:
    """File names in order of their first chunk in the ranking."""
    seen: dict[str, None] = {}
    for hit in hits:
        seen.setdefault(Path(hit.source).name, None)
    return list(seen)


def score_ranking(ranked: list[str], relevant: list[str]) -> dict[str, float]:
    relevant_set = set(relevant)
    gains = [1.0 if doc in relevant_set else 0.0 for doc in ranked[:10]]
    first = next((i for i, gain in enumerate(gains) if gain), None)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant_set), 10)))
    scores = {
        f"recall@{k}": len(relevant_set & set(ranked[:k])) / len(relevant_set) for k in RECALL_AT
    }
    scores["mrr@10"] = 0.0 if first is None else 1 / (first + 1)
    scores["ndcg@10"] = sum(g / math.log2(i + 2) for i, g in enumerate(gains)) / ideal
    return scores


def table(results: dict[str, dict[str, float]]) -> str:
    columns = [*(f"recall@{k}" for k in RECALL_AT), "mrr@10", "ndcg@10", "ms_per_query"]
    lines = ["| mode | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for mode, row in results.items():
        cells = [f"{row[c]:.1f}" if c == "ms_per_query" else f"{row[c]:.3f}" for c in columns]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
