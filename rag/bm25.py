"""BM25 over chunk text with ``bm25s``: English stopwords removed, words Snowball-stemmed."""

from functools import lru_cache

import numpy as np


def tokenize(texts: list[str]) -> list[list[str]]:
    """Lower-cased, stopword-free, stemmed words of each text (the same for chunks and queries)."""
    import bm25s

    return bm25s.tokenize(
        texts,
        stopwords="en",
        stemmer=_stemmer(),
        return_ids=False,
        show_progress=False,
    )


def build_bm25(corpus_tokens: list[list[str]]):
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(corpus_tokens, show_progress=False)
    return retriever


def load_bm25(path: str):
    import bm25s

    return bm25s.BM25.load(path, show_progress=False)


def search_bm25(retriever, query: str, num_docs: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(doc ids, scores) of the best ``k`` docs with a positive score, best first."""
    tokens = [t for t in tokenize([query])[0] if t in retriever.vocab_dict]
    k = min(k, num_docs)
    if not tokens or k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    ids, scores = retriever.retrieve([tokens], k=k, show_progress=False, n_threads=0)
    ids, scores = ids[0], scores[0]
    keep = scores > 0
    return ids[keep].astype(np.int64), scores[keep].astype(np.float32)


@lru_cache(maxsize=1)
def _stemmer():
    try:
        import Stemmer  # PyStemmer
    except ImportError:  # BM25 still works, on unstemmed words
        return None
    return Stemmer.Stemmer("english").stemWords
