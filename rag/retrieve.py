"""Hybrid retrieval: faiss (dense) and BM25 rankings fused by weighted reciprocal rank fusion.

RRF (Cormack et al., 2009) scores a chunk ``sum_r weight_r / (rrf_k + rank_r)`` over the rankings
``r`` that contain it (rank from 1). It needs no score calibration between cosine and BM25.
The top k is then picked from the ranking for source diversity: a chunk whose words nearly repeat
an earlier pick is dropped, and at most ``max_per_source`` chunks of one file are taken while
other files' chunks remain (see ``diversify``). A query whose best cosine similarity is below
``min_similarity`` gets no hits: the index does not hold its answer.
A Retriever is read-only after ``open``: any number of threads may call ``search`` at once.
"""

from collections import Counter
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

__all__ = [
    "FusionConfig",
    "Hit",
    "Retriever",
    "diversify",
    "list_indexes",
    "reciprocal_rank_fusion",
]

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
    max_per_source: int = 1
    """Most chunks of one source file in the results while other files' chunks remain (0: no cap)."""
    near_duplicate: float = 0.0
    """Drop a chunk sharing at least this share of its words (Jaccard) with a better one (0: off)."""
    min_similarity: float = 0.3
    """No hits when the best chunk's cosine similarity is below this: the index does not hold the
    answer (measured for all-MiniLM-L6-v2, see docs/rag.md; -1: always return hits)."""

    def __post_init__(self) -> None:
        if (
            self.dense_weight < 0
            or self.bm25_weight < 0
            or self.dense_weight + self.bm25_weight == 0
        ):
            raise IndexConfigError("--dense-weight and --bm25-weight: >= 0, not both 0")
        if self.rrf_k < 0 or self.num_candidates < 1:
            raise IndexConfigError("--rrf-k must be >= 0 and num_candidates >= 1")
        if self.max_per_source < 0:
            raise IndexConfigError("--max-per-source: 0 (no cap) or more")
        if not 0 <= self.near_duplicate <= 1 or not -1 <= self.min_similarity <= 1:
            raise IndexConfigError("--near-duplicate: 0 to 1; --min-similarity: -1 to 1")


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
        fusion = self.fusion
        diverse = fusion.max_per_source > 0 or fusion.near_duplicate > 0
        num_candidates = max(fusion.num_candidates, top_k) if diverse or mode == "hybrid" else top_k
        best_cosine = None
        if mode == "bm25":
            ids, scores = self.bm25_ranking(query, num_candidates)
        else:
            ids, scores = self.dense_ranking(query, num_candidates)
            best_cosine = float(scores[0]) if len(scores) else -1.0
        if mode == "hybrid":
            bm25_ids, _ = self.bm25_ranking(query, num_candidates)
            ids, scores = reciprocal_rank_fusion(
                [ids, bm25_ids], [fusion.dense_weight, fusion.bm25_weight], fusion.rrf_k
            )
        if best_cosine is not None and best_cosine < fusion.min_similarity:
            return []
        if diverse:
            keep = diversify(
                [self.chunks[row] for row in ids.tolist()],
                top_k,
                fusion.max_per_source,
                fusion.near_duplicate,
            )
            ids, scores = ids[keep], scores[keep]
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


def diversify(
    ranked: list[Chunk], top_k: int, max_per_source: int, near_duplicate: float
) -> list[int]:
    """Positions in ``ranked`` (best first) of up to ``top_k`` chunks to return, best first.

    A chunk is skipped when its word set overlaps a picked chunk's by at least ``near_duplicate``
    (Jaccard; 0: never), e.g. the same paragraph repeated in two files. A chunk of a source that
    already has ``max_per_source`` picks (0: no cap) is held back, and used only if fewer than
    ``top_k`` chunks of other sources remain, so a small index still fills ``top_k``."""
    picked: list[int] = []
    held_back: list[int] = []
    picked_words: list[frozenset[str]] = []
    per_source: Counter[str] = Counter()
    for position, chunk in enumerate(ranked):
        words = frozenset(chunk.text.lower().split())
        if near_duplicate > 0 and any(
            _jaccard(words, other) >= near_duplicate for other in picked_words
        ):
            continue
        if max_per_source and per_source[chunk.source] >= max_per_source:
            held_back.append(position)
            continue
        picked.append(position)
        picked_words.append(words)
        per_source[chunk.source] += 1
        if len(picked) == top_k:
            return picked
    return picked + held_back[: top_k - len(picked)]


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0
