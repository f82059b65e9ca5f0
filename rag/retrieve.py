"""Hybrid retrieval: faiss (dense) and BM25 rankings fused by weighted reciprocal rank fusion.

RRF (Cormack et al., 2009) scores a chunk ``sum_r weight_r / (rrf_k + rank_r)`` over the rankings
``r`` that contain it (rank from 1). It needs no score calibration between cosine and BM25.
A Retriever is read-only after ``open``: any number of threads may call ``search`` at once.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from llmloop.rag import index as files
from llmloop.rag.bm25 import load_bm25, search_bm25
from llmloop.rag.chunking import Chunk
from llmloop.rag.embed import Embedder
from llmloop.rag.errors import IndexConfigError
from llmloop.rag.index import IndexConfig
from llmloop.rag.layout import CURRENT_FILE, list_indexes, live_version_dir

__all__ = ["FusionConfig", "Hit", "Retriever", "list_indexes", "reciprocal_rank_fusion"]

Mode = Literal["hybrid", "dense", "bm25"]
MODES: tuple[Mode, ...] = ("hybrid", "dense", "bm25")


@dataclass(frozen=True)
class FusionConfig:
    dense_weight: float = 1.0
    """Weight of the dense (embedding) ranking in the fusion."""
    bm25_weight: float = 1.0
    """Weight of the BM25 (keyword) ranking in the fusion."""
    rrf_k: int = 60
    """RRF's rank offset: larger flattens the gap between top and lower ranks (60 as in the paper)."""
    num_candidates: int = 50
    """Chunks taken from each ranking before fusing (at least top_k)."""

    def __post_init__(self) -> None:
        if (
            self.dense_weight < 0
            or self.bm25_weight < 0
            or self.dense_weight + self.bm25_weight == 0
        ):
            raise IndexConfigError("--dense-weight and --bm25-weight: >= 0, not both 0")
        if self.rrf_k < 0 or self.num_candidates < 1:
            raise IndexConfigError("--rrf-k must be >= 0 and num_candidates >= 1")


@dataclass(frozen=True)
class Hit:
    source: str
    chunk_id: str
    score: float
    """Fused RRF score (hybrid), cosine similarity (dense) or BM25 score (bm25)."""
    text: str
    title: str
    section: str = ""
    position: int = 0

    def citation(self) -> dict:
        """The contract's citation shape: ``{source, chunk_id, score, text}``."""
        return {
            "source": self.source,
            "chunk_id": self.chunk_id,
            "score": self.score,
            "text": self.text,
        }


class Retriever:
    def __init__(
        self,
        name: str,
        version_dir: Path,
        chunks: list[Chunk],
        dense_index,
        bm25_index,
        embedder: Embedder,
        fusion: FusionConfig,
    ):
        self.name = name
        self.version_dir = version_dir
        self.chunks = chunks
        self.embedder = embedder
        self.fusion = fusion
        self._dense = dense_index
        self._bm25 = bm25_index

    @classmethod
    def open(
        cls, name: str, embedder: Embedder | None = None, fusion: FusionConfig | None = None
    ) -> "Retriever":
        """Load the live version of index ``name``; share one ``embedder`` between retrievers.

        Unknown name: IndexNotFoundError listing the indexes that exist."""
        version_dir = live_version_dir(name)
        manifest = files.read_manifest(version_dir)
        config = IndexConfig(**manifest["index"])
        embedder = embedder or Embedder()
        built_with = manifest["embedder"]
        if (built_with["name"], built_with["dim"]) != (embedder.name, embedder.dim):
            raise IndexConfigError(
                f"index {name!r} was built with {manifest['embedder']['name']} "
                f"({manifest['embedder']['dim']} dims), not {embedder.name} ({embedder.dim} dims); "
                f"re-index it with `llmloop rag index --name {name}`"
            )
        return cls(
            name,
            version_dir,
            files.read_chunks(version_dir),
            files.load_dense(version_dir / files.DENSE_FILE, config),
            load_bm25(str(version_dir / files.BM25_DIR)),
            embedder,
            fusion or FusionConfig(),
        )

    def is_stale(self) -> bool:
        """Whether a newer version of the index was published since ``open``."""
        pointer = self.version_dir.parent / CURRENT_FILE
        try:
            return pointer.read_text().strip() != self.version_dir.name
        except OSError:
            return True

    def search(self, query: str, top_k: int = 4, mode: Mode = "hybrid") -> list[Hit]:
        """The ``top_k`` best chunks for ``query``, best first."""
        if mode not in MODES:
            raise IndexConfigError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
        if top_k < 1:
            raise IndexConfigError(f"top_k {top_k}: must be at least 1")
        if not query.strip():
            return []
        if mode == "dense":
            return self._hits(*self.dense_ranking(query, top_k))
        if mode == "bm25":
            return self._hits(*self.bm25_ranking(query, top_k))
        num_candidates = max(self.fusion.num_candidates, top_k)
        dense_ids, _ = self.dense_ranking(query, num_candidates)
        bm25_ids, _ = self.bm25_ranking(query, num_candidates)
        ids, scores = reciprocal_rank_fusion(
            [dense_ids, bm25_ids],
            [self.fusion.dense_weight, self.fusion.bm25_weight],
            self.fusion.rrf_k,
        )
        return self._hits(ids[:top_k], scores[:top_k])

    def dense_ranking(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk rows, cosine similarities) of the ``k`` nearest chunks."""
        import faiss

        vector = self.embedder.encode([query])  # [1, dim]
        # One query is one thread's work: on a busy 2-core machine letting OpenMP split a flat
        # scan of 100k vectors took 66 ms at p50 against 12 ms on one thread (the same spin-wait
        # trap as torch's; see embed.py). OpenMP keeps this setting per calling thread.
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            scores, ids = self._dense.search(vector, min(k, len(self.chunks)))
        finally:
            faiss.omp_set_num_threads(threads)
        keep = ids[0] >= 0  # faiss pads with -1 when it finds fewer than k
        return ids[0][keep].astype(np.int64), scores[0][keep]

    def bm25_ranking(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(chunk rows, BM25 scores) of the best ``k`` chunks sharing a word with the query."""
        return search_bm25(self._bm25, query, len(self.chunks), k)

    def _hits(self, ids: np.ndarray, scores: np.ndarray) -> list[Hit]:
        hits = []
        for row, score in zip(ids.tolist(), scores.tolist(), strict=True):
            chunk = self.chunks[row]
            hits.append(
                Hit(
                    source=chunk.source,
                    chunk_id=chunk.chunk_id,
                    score=float(score),
                    text=chunk.text,
                    title=chunk.title,
                    section=chunk.section,
                    position=chunk.position,
                )
            )
        return hits


def reciprocal_rank_fusion(
    rankings: list[np.ndarray], weights: list[float], rrf_k: int = 60
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, fused scores), best first, from rankings of ids (best first) and one weight each.

    Ties keep the order of first appearance, so equal weights favour the earlier ranking."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        if weight == 0:
            continue
        for rank, item in enumerate(ranking.tolist(), start=1):
            fused[item] = fused.get(item, 0.0) + weight / (rrf_k + rank)
    ordered = sorted(fused.items(), key=lambda kv: -kv[1])
    ids = np.array([i for i, _ in ordered], dtype=np.int64)
    return ids, np.array([s for _, s in ordered], dtype=np.float64)
