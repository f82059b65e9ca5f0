"""Retrieval by cited source: llmloop's retriever against LlamaIndex's default pipeline, same data.

LlamaIndex as a new user gets it: ``SimpleDirectoryReader`` → ``VectorStoreIndex.from_documents``
with its default ``SentenceSplitter`` (1,024 tokens, 200 overlap) and in-memory vector store,
queried with ``index.as_retriever(similarity_top_k=10)``. The embedder is the same local
all-MiniLM-L6-v2 directory for both, through ``llama-index-embeddings-huggingface``
(``HuggingFaceEmbedding``; MiniLM reads at most 256 tokens of each 1,024-token chunk, as it would
for any user of those defaults). Questions, corpora and scoring are ``rag_quality.py``'s.

A benchmark-only dependency (the ``bench-rag`` extra):

    pip install -e '.[bench-rag]'
    .venv/bin/python benchmarks/rag_vs_llamaindex.py [--out results.json]
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from rag_quality import CORPORA, METRICS, NaivePipeline, evaluate, our_pipelines, table


def llamaindex_pipeline(directory: Path):
    from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    from llmloop.models import embedder_dir

    Settings.llm = None  # retrieval only: no LLM (and no OpenAI key) needed
    Settings.embed_model = HuggingFaceEmbedding(model_name=str(embedder_dir()), device="cpu")
    started = time.perf_counter()
    documents = SimpleDirectoryReader(str(directory)).load_data()
    index = VectorStoreIndex.from_documents(documents)
    num_nodes = len(index.docstore.docs)
    print(
        f"llamaindex {directory.name}: {len(documents)} documents, {num_nodes} nodes "
        f"in {time.perf_counter() - started:.1f} s"
    )
    retriever = index.as_retriever(similarity_top_k=10)

    def search(question: str, k: int) -> list[str]:
        nodes = retriever.retrieve(question)[:k]
        return [node.node.metadata["file_name"] for node in nodes]

    return search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()

    from llmloop.rag.embed import Embedder

    embedder = Embedder()
    rows, payload = [], {}
    for corpus in CORPORA:
        ours = our_pipelines(corpus, embedder)
        pipelines = {
            "ours hybrid": ours["ours hybrid"],
            "naive (1000 chars, RRF)": NaivePipeline(corpus.directory, embedder).search,
            "LlamaIndex default (vector)": llamaindex_pipeline(corpus.directory),
        }
        questions = corpus.questions()
        for split in sorted({q["split"] for q in questions}, key=["all", "dev", "heldout"].index):
            subset = [q for q in questions if q["split"] == split]
            for name, search in pipelines.items():
                figures = evaluate(search, subset)
                rows.append((f"{corpus.name} {split} ({len(subset)} q)", name, figures))
                payload.setdefault(f"{corpus.name}/{split}", {})[name] = figures
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps({"metrics": list(METRICS), "results": payload}, indent=2))


if __name__ == "__main__":
    main()
