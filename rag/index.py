"""The files of one index version: chunks, embeddings, the faiss index and the BM25 index.

Row ``i`` of ``chunks.jsonl`` is row ``i`` of ``embeddings.npy``, faiss id ``i`` and BM25 doc ``i``.
The embeddings are kept so a re-index rebuilds faiss without re-embedding unchanged files.
"""

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llmloop.rag.chunking import Chunk
from llmloop.rag.errors import IndexConfigError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
CHUNKS_FILE = "chunks.jsonl"
EMBEDDINGS_FILE = "embeddings.npy"
DENSE_FILE = "dense.faiss"
BM25_DIR = "bm25"

IndexType = Literal["flat", "hnsw", "ivf"]


@dataclass(frozen=True)
class IndexConfig:
    index_type: IndexType = "flat"
    """faiss index: "flat" (exact; fine to ~50k chunks), "hnsw" (graph; fast at 100k+ chunks),
    or "ivf" (clustered; smallest build cost for millions)."""
    hnsw_m: int = 32
    """HNSW: neighbours per node (more: better recall, more memory)."""
    hnsw_ef_construction: int = 80
    """HNSW: candidate list size while building (more: better graph, slower build)."""
    hnsw_ef_search: int = 128
    """HNSW: candidate list size per query (more: better recall, slower queries)."""
    ivf_nlist: int = 0
    """IVF: number of clusters; 0 picks 4*sqrt(chunks)."""
    ivf_nprobe: int = 16
    """IVF: clusters visited per query."""

    def __post_init__(self) -> None:
        if self.index_type not in ("flat", "hnsw", "ivf"):
            raise IndexConfigError(f"--index-type {self.index_type!r}: choose flat, hnsw or ivf")
        for field in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe"):
            if getattr(self, field) < 1:
                raise IndexConfigError(f"{field} must be at least 1")
        if self.ivf_nlist < 0:
            raise IndexConfigError("ivf_nlist must be 0 (automatic) or more")


def build_dense(embeddings: np.ndarray, config: IndexConfig):
    """A faiss inner-product index over ``embeddings`` [n, dim] (unit vectors: IP = cosine)."""
    import faiss

    num_vectors, dim = embeddings.shape
    if config.index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.hnsw_ef_construction
    elif config.index_type == "ivf" and num_vectors >= 2:
        nlist = config.ivf_nlist or int(4 * np.sqrt(num_vectors))
        nlist = max(1, min(nlist, num_vectors // 2))  # k-means needs points per cluster
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(embeddings)
    else:
        index = faiss.IndexFlatIP(dim)
    index.add(embeddings)
    return index


def load_dense(path: Path, config: IndexConfig):
    import faiss

    index = faiss.read_index(str(path))
    if config.index_type == "hnsw":
        index.hnsw.efSearch = config.hnsw_ef_search
    elif config.index_type == "ivf" and hasattr(index, "nprobe"):
        index.nprobe = config.ivf_nprobe
    return index


def write_version(
    version_dir: Path,
    manifest: dict[str, Any],
    chunks: Sequence[Chunk],
    embeddings: np.ndarray,
    config: IndexConfig,
    bm25_tokens: list[list[str]],
) -> None:
    """Write every file of a version; the manifest goes last, so its presence marks completeness."""
    import faiss

    from llmloop.rag.bm25 import build_bm25

    with open(version_dir / CHUNKS_FILE, "w", encoding="utf-8") as f:
        for chunk in chunks:
            f.write(json.dumps(asdict(chunk), ensure_ascii=False) + "\n")
    np.save(version_dir / EMBEDDINGS_FILE, embeddings)
    faiss.write_index(build_dense(embeddings, config), str(version_dir / DENSE_FILE))
    build_bm25(bm25_tokens).save(str(version_dir / BM25_DIR), show_progress=False)
    manifest = {"format": FORMAT_VERSION, **manifest, "index": asdict(config)}
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))


def read_manifest(version_dir: Path) -> dict[str, Any]:
    return json.loads((version_dir / MANIFEST_FILE).read_text())


def read_chunks(version_dir: Path) -> list[Chunk]:
    with open(version_dir / CHUNKS_FILE, encoding="utf-8") as f:
        return [Chunk(**json.loads(line)) for line in f]


def read_embeddings(version_dir: Path) -> np.ndarray:
    return np.load(version_dir / EMBEDDINGS_FILE)
