"""Character n-gram features for a harm head: no encoder, so nothing to load and ~0.1 ms a text.

TF-IDF of the 1- to 4-character pieces of each word (a word padded with one space each side),
exactly as scikit-learn's ``TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4),
sublinear_tf=True, min_df=2)`` computes them (a test holds the two equal), but from a
vocabulary and idf weights kept in the head's JSON, not a pickle. Korean writes a word's
particles and endings onto its stem (``만드는``, ``만들어``, ``만드는지``), and pieces of
a word are what carry its meaning across those forms, so a linear model over them learns
Korean harm words from the Korean training rows. It knows nothing of a script it has no rows
for, which is why it only speaks, averaged with e5, for Korean text
(``safety.multilingual``; the approaches compared in ``docs/safety.md``).
"""

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_array

NGRAM_RANGE = (1, 4)
MIN_DF = 2  # a piece must occur in two training texts to be a feature


@dataclass(frozen=True)
class CharNgrams:
    vocabulary: dict[str, int]
    """piece -> feature column."""
    idf: np.ndarray
    """[num_features] smoothed inverse document frequencies."""

    def __call__(self, texts: list[str]) -> csr_array:
        """texts -> [num_texts, num_features] L2-normalised TF-IDF, sparse (a text has a few
        hundred of the thousands of pieces). Linear in the text."""
        indptr, columns, values = [0], [], []
        for text in texts:
            counts = Counter(
                self.vocabulary[piece] for piece in pieces(text) if piece in self.vocabulary
            )
            row = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            weights = (1.0 + np.log(tf)) * self.idf[row]
            norm = np.linalg.norm(weights)
            columns.append(row)
            values.append(weights / norm if norm else weights)
            indptr.append(indptr[-1] + len(row))
        return csr_array(
            (
                np.concatenate([np.zeros(0), *values]).astype(np.float32),
                np.concatenate([np.zeros(0, np.int64), *columns]),
                np.asarray(indptr),
            ),
            shape=(len(texts), len(self.vocabulary)),
        )

    def to_json(self) -> dict:
        by_column = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return {"pieces": by_column, "idf": np.round(self.idf, 6).tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "CharNgrams":
        vocabulary = {str(piece): column for column, piece in enumerate(data["pieces"])}
        if len(vocabulary) != len(data["pieces"]):
            raise ValueError("char_ngrams: a piece is listed twice")
        return cls(vocabulary, np.asarray(data["idf"], dtype=np.float32))


def fit(texts: list[str]) -> CharNgrams:
    """The vocabulary and idf weights of ``texts`` (scikit-learn does the counting)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        analyzer=lambda text: list(pieces(text)), sublinear_tf=True, min_df=MIN_DF
    ).fit(texts)
    return CharNgrams(dict(vectorizer.vocabulary_), vectorizer.idf_.astype(np.float32))


def pieces(text: str) -> Iterator[str]:
    """The 1- to 4-character pieces of each lowercased word, padded with a space each side
    (``analyzer="char_wb"``); a padded word no longer than n gives itself once, and stops."""
    low, high = NGRAM_RANGE
    for word in text.lower().split():
        padded = f" {word} "
        for n in range(low, high + 1):
            if len(padded) <= n:
                yield padded
                break
            for start in range(len(padded) - n + 1):
                yield padded[start : start + n]
