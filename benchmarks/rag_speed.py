"""Indexing throughput and query latency of ``rag``.

1. Indexing: the CPython language reference topics (``data/rag/pydoc-topics``) into a fresh
   index: files, chunks, seconds and chunks/s end to end (read, chunk, embed, write); then the same
   command again with nothing changed, and again after one file changed (incremental re-index).
2. Query latency at scale: the real chunks and embeddings from step 1 plus synthetic filler up to
   ``--num-chunks`` (default 100k). Filler vectors are real chunk embeddings plus Gaussian noise,
   re-normalised; filler text is 120 words drawn from the corpus' own word frequencies. Queries
   are the labelled questions of ``data/rag/questions.jsonl``, embedded for real on every call
   (the measured time is ``Retriever.search`` end to end: query embedding, faiss, BM25, fusion).

    .venv/bin/python benchmarks/rag_speed.py [--num-chunks 100000] [--out results.json]

Runs in a temporary LLMLOOP_HOME; nothing is left behind.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data" / "rag"
CORPUS_DIR = DATA_DIR / "pydoc-topics"
QUESTIONS_FILE = DATA_DIR / "questions.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-chunks", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the questions")
    parser.add_argument("--index-types", default="flat,hnsw")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rag-speed-") as home:
        os.environ["LLMLOOP_HOME"] = home
        from llmloop.rag.embed import Embedder

        embedder = Embedder()
        report = {"indexing": indexing(embedder, Path(home))}
        report["latency"] = {
            index_type: latency(embedder, index_type, args.num_chunks, args.repeats)
            for index_type in args.index_types.split(",")
        }
    report["load_average"] = os.getloadavg()
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


def indexing(embedder, home: Path) -> dict:
    import shutil

    from llmloop.rag.indexer import index_paths

    corpus = home / "corpus"
    shutil.copytree(CORPUS_DIR, corpus)
    cpu_started = time.process_time()
    full = index_paths("speed", [corpus], embedder)
    cpu_seconds = time.process_time() - cpu_started  # both cores' CPU time: load-independent
    unchanged = index_paths("speed", [corpus], embedder)
    changed_file = corpus / "if.txt"
    changed_file.write_text(changed_file.read_text() + "\nOne more paragraph.\n")
    one_changed = index_paths("speed", [corpus], embedder)
    result = {
        "num_files": full.num_files,
        "num_chunks": full.num_chunks,
        "full_seconds": round(full.seconds, 1),
        "chunks_per_second": round(full.num_chunks / full.seconds, 2),
        "full_cpu_seconds": round(cpu_seconds, 1),
        "chunks_per_cpu_second": round(full.num_chunks / cpu_seconds, 2),
        "unchanged_reindex_seconds": round(unchanged.seconds, 2),
        "one_file_changed_reindex_seconds": round(one_changed.seconds, 2),
        "one_file_changed_embedded_chunks": one_changed.num_embedded_chunks,
    }
    print("indexing:", result, flush=True)
    return result


def latency(embedder, index_type: str, num_chunks: int, repeats: int) -> dict:
    from llmloop.rag import index as files
    from llmloop.rag.bm25 import tokenize
    from llmloop.rag.index import IndexConfig
    from llmloop.rag.layout import live_version_dir, new_version_dir, publish
    from llmloop.rag.retrieve import FusionConfig, Retriever

    source_dir = live_version_dir("speed")
    chunks = files.read_chunks(source_dir)
    embeddings = files.read_embeddings(source_dir)
    filler_chunks, filler_vectors = filler(chunks, embeddings, num_chunks - len(chunks))
    all_chunks = chunks + filler_chunks
    all_vectors = np.concatenate([embeddings, filler_vectors])
    name = f"speed-{index_type}-{len(all_chunks)}"

    started = time.perf_counter()
    version_dir = new_version_dir(name)
    manifest = files.read_manifest(source_dir) | {"name": name, "num_chunks": len(all_chunks)}
    manifest.pop("format")
    tokens = tokenize([c.embedding_text() for c in all_chunks])
    files.write_version(
        version_dir, manifest, all_chunks, all_vectors, IndexConfig(index_type), tokens
    )
    publish(version_dir)
    build_seconds = time.perf_counter() - started
    del all_chunks, all_vectors, tokens, filler_chunks, filler_vectors

    retriever = Retriever.open(name, embedder=embedder)
    questions = [json.loads(line)["question"] for line in QUESTIONS_FILE.read_text().splitlines()]
    for question in questions[:5]:  # warm-up: first calls allocate
        retriever.search(question, 4)
    result = {"num_chunks": len(retriever.chunks), "build_seconds": round(build_seconds, 1)}
    for mode in ("hybrid", "dense", "bm25"):
        timings = []
        for _ in range(repeats):
            for question in questions:
                t = time.perf_counter()
                retriever.search(question, 4, mode)
                timings.append(1000 * (time.perf_counter() - t))
        result[mode] = summary(timings)
    # the same hybrid search without the per-source cap and threshold (the retriever before them)
    before = Retriever.open(
        name,
        embedder=embedder,
        fusion=FusionConfig(max_per_source=0, near_duplicate=0, min_similarity=-1),
    )
    timings = []
    for _ in range(repeats):
        for question in questions:
            t = time.perf_counter()
            before.search(question, 4, "hybrid")
            timings.append(1000 * (time.perf_counter() - t))
    result["hybrid_before_diversity"] = summary(timings)
    timings = []
    for question in questions * repeats:  # the query embedding alone, for the breakdown
        t = time.perf_counter()
        embedder.encode([question])
        timings.append(1000 * (time.perf_counter() - t))
    result["query_embedding_only"] = summary(timings)
    print(f"latency ({index_type}):", result, flush=True)
    return result


def filler(chunks, embeddings: np.ndarray, count: int):
    """``count`` synthetic chunks: noisy copies of real vectors, text sampled from corpus words."""
    from llmloop.rag.chunking import Chunk

    rng = np.random.default_rng(0)
    words = " ".join(c.text for c in chunks).split()
    picks = rng.integers(0, len(chunks), size=count)
    vectors = embeddings[picks] + rng.normal(0, 0.04, size=(count, embeddings.shape[1]))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    word_ids = rng.integers(0, len(words), size=(count, 120))
    filler_chunks = [
        Chunk(
            f"filler-{i}",
            f"/filler/{i // 100}.txt",
            "Filler",
            "",
            i % 100,
            " ".join(words[j] for j in row),
        )
        for i, row in enumerate(word_ids)
    ]
    return filler_chunks, vectors


def summary(timings_ms: list[float]) -> dict:
    ordered = sorted(timings_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "num_queries": len(ordered),
    }


if __name__ == "__main__":
    main()
