"""Sentence embeddings with the shipped all-MiniLM-L6-v2 (sentence-transformers), L2-normalised.

Normalised vectors make faiss's inner product the cosine similarity. One lock serialises calls:
the Rust tokenizer refuses concurrent use of one instance, and torch already uses every core for
a batch, so server threads lose nothing by taking turns. A query-sized call (a few texts) runs on
one torch thread: on a busy 2-core machine, waking a second OpenMP thread for a 10-token input
cost 30x the work itself (measured ~300 ms vs ~11 ms per query).
"""

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from llmloop.models import DEFAULT_EMBEDDER, embedder_dir


class Embedder:
    def __init__(
        self,
        model_dir: str | Path | None = None,
        batch_size: int = 64,
        num_threads: int | None = None,
    ):
        """``model_dir``: a sentence-transformers dir (None: the shipped all-MiniLM-L6-v2);
        ``batch_size``: texts per forward pass when indexing; ``num_threads``: torch threads for
        batches (None: torch's default)."""
        from sentence_transformers import SentenceTransformer

        path = Path(model_dir) if model_dir is not None else embedder_dir()
        self.model_dir = path
        is_default = model_dir is None or path.resolve() == embedder_dir().resolve()
        self.name = DEFAULT_EMBEDDER if is_default else path.name
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self._tokenizer = self._model.tokenizer
        self.dim: int = self._model.get_embedding_dimension()
        self.max_seq_length: int = self._model.max_seq_length
        self._lock = threading.Lock()

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """[n, dim] float32 unit vectors; texts longer than max_seq_length are truncated."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) <= _QUERY_BATCH:
            with self._lock, _torch_threads(1):
                return self._forward(texts)
        with self._lock, _torch_threads(self.num_threads):
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Wordpiece tokens per text, without special tokens and without truncation."""
        if not texts:
            return []
        with self._lock:
            encoded = self._tokenizer(
                texts, add_special_tokens=False, truncation=False, verbose=False
            )
        return [len(ids) for ids in encoded["input_ids"]]

    def _forward(self, texts: list[str]) -> np.ndarray:
        """One forward pass through the model's own modules (transformer, pooling, normalise),
        skipping encode()'s sorting and batching: the query path."""
        import torch

        with torch.inference_mode():
            # preprocess() is tokenize()'s newer name (sentence-transformers >= 6)
            prepare = getattr(self._model, "preprocess", None) or self._model.tokenize
            features = prepare(texts)
            vectors = self._model(features)["sentence_embedding"]  # [n, dim]
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)


_QUERY_BATCH = 8
"""Calls with at most this many texts take the single-thread query path."""


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if num_threads is None or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
