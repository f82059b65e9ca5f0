"""Per-sample metrics, each a pure function of strings or numbers (hand-checkable in tests).

Answer normalisation follows SQuAD's official script (lower-case, drop punctuation and the
articles a/an/the, squeeze whitespace); ROUGE-L is ``rouge-score``'s F-measure; BLEU and chrF are
``sacrebleu``'s sentence scores scaled to 0..1. Multiple-choice scoring follows
lm-evaluation-harness: ``acc`` picks the highest log-likelihood, ``acc_norm`` the highest
log-likelihood per character of the choice.
"""

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from functools import cache

import numpy as np

REFUSAL_PATTERN = re.compile(
    r"\b(i can(?:'|no)t|i cannot|i'm (?:sorry|unable|not able)|i am (?:sorry|unable|not able)|"
    r"i won't|i will not|as an ai|i must decline|i'm not going to|cannot (?:help|assist|provide))",
    re.IGNORECASE,
)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 on normalised answers."""
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    return _rouge_scorer().score(reference, prediction)["rougeL"].fmeasure


def bleu(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(prediction, [reference]).score / 100


def chrf(prediction: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_chrf(prediction, [reference]).score / 100


def contains(prediction: str, reference: str) -> float:
    """1 when the normalised reference appears, as whole words, in the normalised prediction."""
    wanted = normalize_answer(reference)
    found = re.search(rf"(^| ){re.escape(wanted)}( |$)", normalize_answer(prediction))
    return float(bool(wanted) and found is not None)


def regex_match(prediction: str, pattern: str, reference: str | None = None) -> float:
    """1 when ``pattern`` matches; with a capture group and a reference, the group must equal it."""
    match = re.search(pattern, prediction)
    if match is None:
        return 0.0
    if match.groups() and reference is not None:
        return exact_match(match.group(1), reference)
    return 1.0


GENERATION_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "f1": token_f1,
    "rouge_l": rouge_l,
    "bleu": bleu,
    "chrf": chrf,
    "contains": contains,
}


def best_over_references(
    metric: Callable[[str, str], float], prediction: str, references: Sequence[str]
) -> float:
    """Score against each acceptable reference and keep the best (SQuAD's rule)."""
    return max(metric(prediction, r) for r in references)


def multiple_choice_scores(
    loglikelihoods: Sequence[float], choices: Sequence[str], label: int
) -> dict[str, float]:
    """lm-evaluation-harness's acc and acc_norm for one question."""
    lls = np.asarray(loglikelihoods, dtype=float)
    lengths = np.asarray([float(len(c)) for c in choices])
    return {
        "acc": float(int(np.argmax(lls)) == label),
        "acc_norm": float(int(np.argmax(lls / lengths)) == label),
    }


def perplexities(total_logprob: float, num_tokens: int, num_words: int, num_bytes: int) -> dict:
    """Token and word perplexity and bits per byte from a summed log-likelihood (nats)."""
    return {
        "token_perplexity": math.exp(-total_logprob / num_tokens),
        "word_perplexity": math.exp(-total_logprob / num_words),
        "bits_per_byte": -total_logprob / (num_bytes * math.log(2)),
    }


def is_refusal(text: str, finish_reason: str | None) -> bool:
    """The server's safety filter (``content_filter``) or the model's own refusal wording."""
    return finish_reason == "content_filter" or bool(REFUSAL_PATTERN.search(text))


def bootstrap_ci(
    statistic: Callable[[Sequence[int]], float],
    num_samples: int,
    num_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(indices)`` over resampled sample indices."""
    rng = np.random.default_rng(seed)
    values = [
        statistic(rng.integers(0, num_samples, num_samples).tolist()) for _ in range(num_resamples)
    ]
    alpha = (1 - confidence) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


@cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
