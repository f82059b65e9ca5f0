"""Build or update an index: load → chunk → embed (only what changed) → write → publish.

Files whose sha256 matches the live version keep their chunks and embeddings; new and changed
files are embedded; files no longer under the given paths drop out. Unreadable or empty files are
reported in the result and skipped. The new version is published atomically (see ``layout``).
"""

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from llmloop.hashing import sha256_file
from llmloop.rag import index as files
from llmloop.rag.bm25 import tokenize
from llmloop.rag.chunking import CHUNKER_VERSION, Chunk, ChunkingConfig, chunk_document
from llmloop.rag.embed import Embedder
from llmloop.rag.errors import NothingToIndexError, UnreadableFileError
from llmloop.rag.index import IndexConfig
from llmloop.rag.layout import discard, find_live_version_dir, new_version_dir, publish
from llmloop.rag.loaders import find_files, load


@dataclass
class IndexResult:
    name: str
    version_dir: Path
    num_files: int = 0
    num_chunks: int = 0
    num_embedded_files: int = 0
    """Files that were new or changed, so were (re-)embedded."""
    num_reused_files: int = 0
    """Files unchanged since the last version: chunks and embeddings reused."""
    num_removed_files: int = 0
    """Files in the last version that are no longer under the given paths."""
    num_embedded_chunks: int = 0
    skipped: list[str] = field(default_factory=list)
    """One message per unreadable or empty file."""
    seconds: float = 0.0


def index_paths(
    name: str,
    paths: Sequence[str | Path],
    embedder: Embedder,
    chunking: ChunkingConfig | None = None,
    config: IndexConfig | None = None,
    show_progress: bool = True,
) -> IndexResult:
    """Make index ``name`` hold exactly the supported files under ``paths``."""
    started = time.perf_counter()
    chunking, config = chunking or ChunkingConfig(), config or IndexConfig()
    sources = find_files(paths)
    if not sources:
        raise NothingToIndexError(
            f"no .txt, .md, .html or .pdf file under {', '.join(map(str, paths))}"
        )
    previous = _previous(name, embedder, chunking)
    result = IndexResult(name=name, version_dir=Path())

    kept_chunks: list[Chunk] = []
    kept_rows: list[int] = []  # rows of previous embeddings reused, aligned with kept_chunks
    new_chunks: list[Chunk] = []
    digests: dict[str, str] = {}  # source -> sha256 of the bytes indexed
    for path in tqdm(sources, desc=f"reading {name}", unit="file", disable=not show_progress):
        source = str(path)
        try:
            digests[source] = sha256_file(path)
            if previous.hashes.get(source) == digests[source]:
                kept_chunks.extend(previous.chunks[i] for i in previous.rows[source])
                kept_rows.extend(previous.rows[source])
                result.num_reused_files += 1
                continue
            chunks = chunk_document(load(path), chunking, embedder.count_tokens)
            if not chunks:
                raise UnreadableFileError(f"{path}: holds no text")
        except (UnreadableFileError, OSError) as e:
            result.skipped.append(str(e))
            continue
        new_chunks.extend(chunks)
        result.num_embedded_files += 1
    result.num_removed_files = len(set(previous.rows) - {str(p) for p in sources})

    all_chunks = kept_chunks + new_chunks
    if not all_chunks:
        raise NothingToIndexError(
            "every file was skipped:\n  " + "\n  ".join(result.skipped or ["(no files)"])
        )
    new_vectors = _embed(embedder, new_chunks, show_progress)
    embeddings = np.concatenate([previous.embeddings[kept_rows], new_vectors]).astype(np.float32)
    order = sorted(
        range(len(all_chunks)), key=lambda i: (all_chunks[i].source, all_chunks[i].position)
    )
    all_chunks = [all_chunks[i] for i in order]
    embeddings = np.ascontiguousarray(embeddings[order])

    manifest = {
        "name": name,
        "paths": [str(Path(p).expanduser().resolve()) for p in paths],
        "embedder": {"name": embedder.name, "dim": embedder.dim},
        "chunking": _chunking_record(chunking),
        "num_chunks": len(all_chunks),
        "files": _file_table(all_chunks, digests),
    }
    version_dir = new_version_dir(name)
    try:
        bm25_tokens = tokenize([c.embedding_text() for c in all_chunks])
        files.write_version(version_dir, manifest, all_chunks, embeddings, config, bm25_tokens)
        publish(version_dir)
    except BaseException:
        discard(version_dir)
        raise
    result.version_dir = version_dir
    result.num_files = result.num_embedded_files + result.num_reused_files
    result.num_chunks = len(all_chunks)
    result.num_embedded_chunks = len(new_chunks)
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class _Previous:
    """The live version's chunks and embeddings, grouped by source file."""

    hashes: dict[str, str] = field(default_factory=dict)
    rows: dict[str, list[int]] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))


def _previous(name: str, embedder: Embedder, chunking: ChunkingConfig) -> _Previous:
    version_dir = find_live_version_dir(name)
    if version_dir is None:
        return _Previous(embeddings=np.zeros((0, embedder.dim), dtype=np.float32))
    manifest = files.read_manifest(version_dir)
    same_embedding = manifest.get("embedder", {}).get("name") == embedder.name
    if not same_embedding or manifest.get("chunking") != _chunking_record(chunking):
        # other chunks or another vector space: nothing can be reused
        return _Previous(embeddings=np.zeros((0, embedder.dim), dtype=np.float32))
    chunks = files.read_chunks(version_dir)
    rows: dict[str, list[int]] = {}
    for i, chunk in enumerate(chunks):
        rows.setdefault(chunk.source, []).append(i)
    hashes = {source: entry["sha256"] for source, entry in manifest["files"].items()}
    return _Previous(hashes, rows, chunks, files.read_embeddings(version_dir))


def _chunking_record(chunking: ChunkingConfig) -> dict:
    return {**asdict(chunking), "chunker_version": CHUNKER_VERSION}


def _embed(embedder: Embedder, chunks: list[Chunk], show_progress: bool) -> np.ndarray:
    vectors = np.zeros((len(chunks), embedder.dim), dtype=np.float32)
    step = embedder.batch_size * 4  # a progress tick every few batches
    with tqdm(total=len(chunks), desc="embedding", unit="chunk", disable=not show_progress) as bar:
        for start in range(0, len(chunks), step):
            batch = chunks[start : start + step]
            vectors[start : start + len(batch)] = embedder.encode(
                [c.embedding_text() for c in batch]
            )
            bar.update(len(batch))
    return vectors


def _file_table(chunks: list[Chunk], hashes: dict[str, str]) -> dict[str, dict]:
    table: dict[str, dict] = {}
    for chunk in chunks:
        entry = table.setdefault(chunk.source, {"sha256": hashes[chunk.source], "num_chunks": 0})
        entry["num_chunks"] += 1
    return table
