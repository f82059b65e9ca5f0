"""The report's ``drift`` section: every signal, reference sample against current sample."""

import functools
from collections import Counter
from collections.abc import Callable

import numpy as np

from llmloop.feedback.monitor.drift import (
    ALPHA,
    NUM_PERMUTATIONS,
    Signal,
    chi_square_test,
    ks_test,
    mmd_permutation_test,
    skipped,
    two_proportion_test,
)
from llmloop.feedback.monitor.sample import DEFAULT_SAMPLE_SIZE, DriftSample

Embed = Callable[[list[str]], np.ndarray]
"""texts -> [len(texts), dim] embeddings."""
SIGNALS = (
    "prompts",
    "length",
    "language",
    "topics",
    "refusal_rate",
    "answer_length",
    "negative_feedback",
)
MAX_TOPICS = 8
MIN_PROMPTS = 20
"""Fewer prompts a side than this and the embedding tests are not run."""


def detect_drift(
    reference: DriftSample,
    current: DriftSample,
    embed: Embed,
    *,
    alpha: float = ALPHA,
    num_permutations: int = NUM_PERMUTATIONS,
    seed: int = 0,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
) -> dict[str, Signal]:
    """``sample_size``: the rate tests weigh each side as at most this many rows, as if sampled
    like the prompts."""
    max_n = sample_size
    out: dict[str, Signal] = {}
    if min(len(reference.texts), len(current.texts)) < MIN_PROMPTS:
        reason = f"fewer than {MIN_PROMPTS} prompts on a side"
        out["prompts"] = skipped("MMD²", reason)
        out["topics"] = skipped("chi-square on k-means clusters", reason)
        out["language"] = skipped("chi-square on language shares", reason)
    else:
        embeddings = np.asarray(embed(reference.texts + current.texts), dtype=np.float64)
        x, y = embeddings[: len(reference.texts)], embeddings[len(reference.texts) :]
        out["prompts"] = mmd_permutation_test(
            x, y, alpha=alpha, num_permutations=num_permutations, seed=seed
        )
        out["language"] = chi_square_test(
            languages(reference.texts), languages(current.texts), alpha=alpha
        )
        out["topics"] = topic_test(x, y, alpha=alpha, seed=seed)
    out["length"] = _length(reference.prompt_tokens, current.prompt_tokens, "prompt_tokens", alpha)
    out["refusal_rate"] = _rate(reference, current, "refusals", "requests", max_n, alpha)
    out["answer_length"] = _length(
        reference.completion_tokens, current.completion_tokens, "completion_tokens", alpha
    )
    out["negative_feedback"] = _rate(reference, current, "thumbs_down", "rated", max_n, alpha)
    return {name: out[name] for name in SIGNALS}


def topic_test(x: np.ndarray, y: np.ndarray, *, alpha: float = ALPHA, seed: int = 0) -> Signal:
    """k-means on the pooled embeddings, then chi-square on each side's cluster shares. Fitting
    on the pooled sample treats both sides alike, so the same mix gives no signal."""
    from sklearn.cluster import KMeans

    pooled = np.vstack([x, y])
    k = max(2, min(MAX_TOPICS, len(pooled) // 50))
    labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(pooled)
    ref, cur = labels[: len(x)], labels[len(x) :]
    signal = chi_square_test(_counts(ref), _counts(cur), alpha=alpha)
    return Signal(
        signal.score,
        signal.threshold,
        signal.drifted,
        f"chi-square on {k} k-means clusters of the embeddings, alpha={alpha}",
        signal.compared,
    )


def languages(texts: list[str]) -> dict[str, int]:
    """Language counts by py3langid (~0.02 ms a 200-character text)."""
    identifier = _language_identifier()
    return dict(Counter(identifier.classify(t)[0] if t.strip() else "none" for t in texts))


@functools.cache  # loading the model takes ~2 s; it is read-only afterwards
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


def load_embedder() -> Embed:
    """The shipped all-MiniLM-L6-v2 (sentence-transformers), unit-norm embeddings."""
    from sentence_transformers import SentenceTransformer

    from llmloop.models import embedder_dir

    model = SentenceTransformer(str(embedder_dir()), device="cpu", local_files_only=True)

    def embed(texts: list[str]) -> np.ndarray:
        # each distinct text once: traffic repeats itself (templates, retries, eval suites)
        distinct, position = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        vectors = model.encode(
            list(distinct), batch_size=64, normalize_embeddings=True, convert_to_numpy=True
        )
        return vectors[position]

    return embed


def _length(
    reference: np.ndarray | None, current: np.ndarray | None, name: str, alpha: float
) -> Signal:
    if reference is None or current is None:
        return skipped("Kolmogorov-Smirnov D", f"the reference has no {name} on every line")
    if min(len(reference), len(current)) < MIN_PROMPTS:
        return skipped("Kolmogorov-Smirnov D", f"fewer than {MIN_PROMPTS} rows on a side")
    signal = ks_test(reference, current, alpha=alpha)
    return Signal(
        signal.score, signal.threshold, signal.drifted, signal.test, {"of": name, **signal.compared}
    )


def _rate(
    reference: DriftSample, current: DriftSample, count: str, total: str, max_n: int, alpha: float
) -> Signal:
    test = "two-proportion z"
    k_ref, n_ref = getattr(reference, count), getattr(reference, total)
    k_cur, n_cur = getattr(current, count), getattr(current, total)
    if None in (k_ref, n_ref, k_cur, n_cur):
        return skipped(test, f"the reference does not record {count}")
    signal = two_proportion_test(k_ref, n_ref, k_cur, n_cur, max_n=max_n, alpha=alpha)
    return Signal(
        signal.score, signal.threshold, signal.drifted, signal.test,
        {"of": f"{count} / {total}", **signal.compared}, signal.skipped,
    )  # fmt: skip


def _counts(labels: np.ndarray) -> dict[str, int]:
    values, counts = np.unique(labels, return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}
