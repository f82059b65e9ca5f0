"""Two-sample tests for drift: each answers "do these two samples come from one distribution?"
with a ``score``, the ``threshold`` it must pass at level ``alpha``, and ``drifted``.

Prompts: the maximum mean discrepancy (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012) of
their MiniLM embeddings, unbiased MMD², RBF kernel ``exp(-|x-y|² / (2σ²))`` with σ² the median
squared distance of the pooled sample (the median heuristic). Its threshold is the (1 - alpha)
quantile of the MMD² over random relabellings of the pooled sample (a permutation test), so the
false-alarm rate is alpha whatever the embedding's geometry. All permutations cost one
``[N, N] @ [N, P]`` product: about 0.5 s for 2,000 prompts a side and 200 permutations.

Why our own statistic and not Evidently: Evidently is not installed here, brings its own pins
(pandas, plotly, nltk, a pydantic range) for a statistic that is these few lines of numpy, and
its embedding drift methods (a domain classifier, or MMD without a permutation threshold by
default) would need the same calibration work. scipy (already under scikit-learn) supplies the
chi-square quantiles.

Lengths: Kolmogorov-Smirnov ``D`` against its asymptotic critical value
``sqrt(-ln(alpha/2) / 2) * sqrt((n+m)/(n m))`` (conservative for integer token counts, which tie).
Shares (languages, topic clusters): Pearson's chi-square on the 2 x k table against the chi-square
(1 - alpha) quantile. Rates (refusals, negative feedback): the two-proportion z-test, ``|z|``
against the normal (1 - alpha/2) quantile, with each side counted as at most ``max_n`` rows so a
million-row window does not turn a 0.1-point wobble into an alarm.
"""

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

ALPHA = 0.01
NUM_PERMUTATIONS = 200
MIN_CATEGORY_COUNT = 10
"""Categories rarer than this in the pooled sample are merged, so chi-square's expected counts
stay large enough for its quantiles to hold."""
OTHER = "other"
MEDIAN_SAMPLE = 1000
"""Points whose pairwise distances set the kernel width (the median is stable well below N)."""


@dataclass(frozen=True)
class Signal:
    score: float | None
    threshold: float | None
    drifted: bool
    test: str
    compared: dict = field(default_factory=dict)
    """What was compared: sample sizes, rates, shares, means."""
    skipped: str | None = None
    """Why there is no score (e.g. the reference file has no token counts)."""

    def to_json(self) -> dict:
        out = asdict(self)
        if self.skipped is None:
            del out["skipped"]
        return out


def skipped(test: str, reason: str) -> Signal:
    return Signal(None, None, False, test, skipped=reason)


def mmd_permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    alpha: float = ALPHA,
    num_permutations: int = NUM_PERMUTATIONS,
    seed: int = 0,
) -> Signal:
    """``x``: [n, dim], ``y``: [m, dim] embeddings; n, m >= 2."""
    n, m = len(x), len(y)
    rng = np.random.default_rng(seed)
    z = np.vstack([x, y]).astype(np.float64)  # [N, dim]
    sq_norms = np.einsum("ij,ij->i", z, z)
    kernel = z @ z.T  # [N, N], becomes the kernel in place
    kernel *= -2
    kernel += sq_norms[:, None]
    kernel += sq_norms[None, :]
    np.maximum(kernel, 0, out=kernel)  # squared distances
    width2 = _median_sq_distance(kernel, rng)
    kernel /= -2 * width2
    np.exp(kernel, out=kernel)
    np.fill_diagonal(kernel, 0)  # the unbiased MMD² leaves out k(x_i, x_i)

    # column 0: the observed split; the rest: random relabellings. [N, 1 + P], 1 = "reference"
    is_x = np.zeros((n + m, 1 + num_permutations))
    is_x[:n, 0] = 1
    for j in range(1, 1 + num_permutations):
        is_x[rng.permutation(n + m)[:n], j] = 1
    row_sums = kernel.sum(axis=1)
    total = row_sums.sum()
    sum_xx = np.einsum("ij,ij->j", is_x, kernel @ is_x)
    sum_xy = is_x.T @ row_sums - sum_xx
    sum_yy = total - 2 * sum_xy - sum_xx
    mmd2 = sum_xx / (n * (n - 1)) + sum_yy / (m * (m - 1)) - 2 * sum_xy / (n * m)
    score, null = float(mmd2[0]), mmd2[1:]
    threshold = float(np.quantile(null, 1 - alpha, method="higher"))
    p_value = (1 + int(np.sum(null >= score))) / (1 + num_permutations)
    return Signal(
        score,
        threshold,
        score > threshold,
        f"MMD² (RBF, median heuristic), {num_permutations} permutations, alpha={alpha}",
        {"n_reference": n, "n_current": m, "p_value": p_value, "kernel_width2": width2},
    )


def ks_test(reference: np.ndarray, current: np.ndarray, *, alpha: float = ALPHA) -> Signal:
    """Kolmogorov-Smirnov ``D`` = the largest gap between the two empirical CDFs."""
    n, m = len(reference), len(current)
    a, b = np.sort(reference), np.sort(current)
    points = np.concatenate([a, b])
    gap = np.abs(
        np.searchsorted(a, points, side="right") / n - np.searchsorted(b, points, side="right") / m
    )
    score = float(gap.max())
    threshold = math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))
    return Signal(
        score,
        threshold,
        score > threshold,
        f"Kolmogorov-Smirnov D, alpha={alpha}",
        {
            "n_reference": n,
            "n_current": m,
            "mean_reference": float(a.mean()),
            "mean_current": float(b.mean()),
            "median_reference": float(np.median(a)),
            "median_current": float(np.median(b)),
        },
    )


def chi_square_test(
    reference: dict[str, int], current: dict[str, int], *, alpha: float = ALPHA
) -> Signal:
    """Do the two samples share one distribution over categories (languages, clusters)?"""
    from scipy.stats import chi2

    categories = _merge_rare(reference, current)
    table = np.array([_row(side, categories) for side in (reference, current)], dtype=np.float64)
    n_ref, n_cur = table.sum(axis=1)
    compared = {
        "n_reference": int(n_ref),
        "n_current": int(n_cur),
        "shares_reference": _shares(categories, table[0]),
        "shares_current": _shares(categories, table[1]),
    }
    test = f"chi-square on shares, alpha={alpha}"
    if len(categories) < 2:
        return Signal(0.0, None, False, test, compared)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    score = float(((table - expected) ** 2 / expected).sum())
    dof = len(categories) - 1
    threshold = float(chi2.ppf(1 - alpha, dof))
    return Signal(score, threshold, score > threshold, test, {**compared, "dof": dof})


def two_proportion_test(
    k_ref: int, n_ref: int, k_cur: int, n_cur: int, *, max_n: int, alpha: float = ALPHA
) -> Signal:
    """|z| of the difference between two rates; each side weighs at most ``max_n`` rows."""
    test = f"two-proportion z, alpha={alpha}, n capped at {max_n}"
    if not n_ref or not n_cur:
        return skipped(test, "one side has no rows to count")
    p_ref, p_cur = k_ref / n_ref, k_cur / n_cur
    w_ref, w_cur = min(n_ref, max_n), min(n_cur, max_n)
    pooled = (p_ref * w_ref + p_cur * w_cur) / (w_ref + w_cur)
    se = math.sqrt(pooled * (1 - pooled) * (1 / w_ref + 1 / w_cur))
    score = abs(p_cur - p_ref) / se if se > 0 else 0.0
    threshold = NormalDist().inv_cdf(1 - alpha / 2)
    compared = {
        "rate_reference": p_ref,
        "rate_current": p_cur,
        "n_reference": n_ref,
        "n_current": n_cur,
    }
    return Signal(score, threshold, score > threshold, test, compared)


def _median_sq_distance(sq_distances: np.ndarray, rng: np.random.Generator) -> float:
    size = len(sq_distances)
    picked = np.sort(rng.choice(size, min(size, MEDIAN_SAMPLE), replace=False))
    block = sq_distances[np.ix_(picked, picked)]
    median = float(np.median(block[np.triu_indices(len(picked), k=1)]))
    return median if median > 0 else 1.0  # identical points: any width gives MMD² = 0


def _merge_rare(reference: dict[str, int], current: dict[str, int]) -> list[str]:
    pooled = {c: reference.get(c, 0) + current.get(c, 0) for c in {*reference, *current}}
    common = sorted(c for c, count in pooled.items() if count >= MIN_CATEGORY_COUNT)
    rare = sum(count for c, count in pooled.items() if count < MIN_CATEGORY_COUNT)
    return [*common, OTHER] if rare >= MIN_CATEGORY_COUNT else common


def _row(side: dict[str, int], categories: list[str]) -> list[int]:
    """Counts per category; "other" (when merged) holds the rest of the side's named rows."""
    named = [side.get(c, 0) for c in categories if c != OTHER]
    if OTHER in categories:
        rest = sum(side.values()) - sum(named)
        return [*named, rest]
    return named


def _shares(categories: list[str], counts: np.ndarray) -> dict[str, float]:
    total = counts.sum()
    return {c: float(k / total) if total else 0.0 for c, k in zip(categories, counts, strict=True)}
